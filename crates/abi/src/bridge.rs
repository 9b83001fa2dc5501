//! Typed Rust values to and from [`Value`]s, through serde, guided by the
//! WIT type. The types in `teller_contract` derive `Serialize` and
//! `Deserialize`; fields go in declaration order (the WIT's), cases by index,
//! so any type the WIT declares crosses without code written for it.

mod de;
mod ser;

use super::{AbiError, Contract, Value};
use de::De;
use ser::Ser;
use serde::Serialize;
use wit_parser::Type;

/// Converts `value` into a [`Value`] of WIT type `ty`.
pub fn to_value<T: Serialize + ?Sized>(
    contract: &Contract,
    ty: &Type,
    value: &T,
) -> Result<Value, AbiError> {
    value.serialize(Ser {
        contract,
        ty: Some(ty),
    })
}

/// Converts a [`Value`] of WIT type `ty` into `T`.
pub fn from_value<T: serde::de::DeserializeOwned>(
    contract: &Contract,
    ty: &Type,
    value: Value,
) -> Result<T, AbiError> {
    T::deserialize(De {
        contract,
        ty: Some(ty),
        value,
    })
}

impl serde::ser::Error for AbiError {
    fn custom<T: std::fmt::Display>(msg: T) -> Self {
        AbiError(msg.to_string())
    }
}

impl serde::de::Error for AbiError {
    fn custom<T: std::fmt::Display>(msg: T) -> Self {
        AbiError(msg.to_string())
    }
}

pub(crate) fn mismatch<T>(what: &str, ty: Option<&Type>) -> Result<T, AbiError> {
    Err(AbiError(format!(
        "a Rust {what} does not match the WIT type {ty:?}"
    )))
}

/// Whether Rust field `rust` is WIT field `wit` (`kebab-case` in the WIT,
/// `snake_case` in Rust).
pub(crate) fn same_name(wit: &str, rust: &str) -> bool {
    wit.len() == rust.len()
        && wit
            .bytes()
            .zip(rust.bytes())
            .all(|(w, r)| (if w == b'-' { b'_' } else { w }) == r)
}

/// The value standing for "no payload" (`()` in Rust).
fn unit() -> Value {
    Value::Tuple(Vec::new())
}

/// The types of a list's elements, a tuple's items or a record's fields,
/// borrowed from the WIT.
#[derive(Clone, Copy)]
pub(crate) enum Types<'a> {
    Repeat(&'a Type),
    Tuple(&'a [Type]),
    Fields(&'a [wit_parser::Field]),
}

impl<'a> Types<'a> {
    pub(crate) fn get(&self, i: usize) -> Result<&'a Type, AbiError> {
        let (ty, len) = match self {
            Types::Repeat(t) => return Ok(t),
            Types::Tuple(types) => (types.get(i), types.len()),
            Types::Fields(fields) => (fields.get(i).map(|f| &f.ty), fields.len()),
        };
        ty.ok_or_else(|| AbiError(format!("more than {len} fields or items")))
    }

    /// How many there must be (a list: any number).
    fn fixed(&self) -> Option<usize> {
        match self {
            Types::Repeat(_) => None,
            Types::Tuple(types) => Some(types.len()),
            Types::Fields(fields) => Some(fields.len()),
        }
    }

    pub(crate) fn check_len(&self, n: usize) -> Result<(), AbiError> {
        match self.fixed() {
            Some(len) if len != n => Err(AbiError(format!("{n} fields or items given for {len}"))),
            _ => Ok(()),
        }
    }

    /// Room for the values: exact for tuples and records.
    pub(crate) fn capacity(&self) -> usize {
        self.fixed().unwrap_or(0)
    }
}
