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

/// The value standing for "no payload" (`()` in Rust).
fn unit() -> Value {
    Value::Tuple(Vec::new())
}

pub(crate) enum Types<'a> {
    Repeat(&'a Type),
    Fixed(Vec<&'a Type>),
}

impl<'a> Types<'a> {
    pub(crate) fn get(&self, i: usize) -> Result<&'a Type, AbiError> {
        match self {
            Types::Repeat(t) => Ok(t),
            Types::Fixed(v) => v
                .get(i)
                .copied()
                .ok_or_else(|| AbiError(format!("more than {} fields or items", v.len()))),
        }
    }

    pub(crate) fn check_len(&self, n: usize) -> Result<(), AbiError> {
        match self {
            Types::Fixed(v) if v.len() != n => Err(AbiError(format!(
                "{n} fields or items given for {}",
                v.len()
            ))),
            _ => Ok(()),
        }
    }
}
