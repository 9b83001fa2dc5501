//! [`Value`]s into Rust values: serde's deserializer, led by the WIT type,
//! with every record's field names checked against the WIT.

use super::{Types, unit};
use crate::{AbiError, Contract, Kind, Value};
use serde::de::{self, DeserializeSeed, IntoDeserializer, Visitor};
use wit_parser::{Type, TypeDefKind};

/// Deserializes out of a [`Value`]; `ty` says how to read its parts.
pub(super) struct De<'a> {
    pub(super) contract: &'a Contract,
    pub(super) ty: Option<&'a Type>,
    pub(super) value: Value,
}

/// Where a value sits in the WIT: what [`De`] consults about its type.
#[derive(Clone, Copy)]
pub(super) struct Typed<'a> {
    contract: &'a Contract,
    ty: Option<&'a Type>,
}

impl<'a> Typed<'a> {
    fn kind(&self) -> Result<Kind<'a>, AbiError> {
        match self.ty {
            Some(ty) => self.contract.kind(ty),
            None => Err(AbiError("the WIT has no value here".into())),
        }
    }

    fn element_types(&self) -> Result<Types<'a>, AbiError> {
        Ok(match self.kind()? {
            Kind::Def(TypeDefKind::List(elem)) => Types::Repeat(elem),
            Kind::Def(TypeDefKind::Tuple(t)) => Types::Tuple(&t.types),
            Kind::Def(TypeDefKind::Record(r)) => Types::Fields(&r.fields),
            _ => return Err(AbiError(format!("{:?} has no elements", self.ty))),
        })
    }

    fn payload_type(&self, case: u32) -> Result<Option<&'a Type>, AbiError> {
        let Kind::Def(def) = self.kind()? else {
            return Err(AbiError("not a variant".into()));
        };
        let cases = self.contract.cases(def)?;
        cases
            .get(case as usize)
            .ok_or_else(|| AbiError(format!("case {case} out of range")))
    }
}

impl<'de, 'a> de::Deserializer<'de> for De<'a> {
    type Error = AbiError;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, AbiError> {
        let contract = self.contract;
        // A result is the variant { ok, error } here.
        let value = match self.value {
            Value::Result(Ok(p)) => Value::Variant(0, p),
            Value::Result(Err(p)) => Value::Variant(1, p),
            v => v,
        };
        let this = Typed {
            contract,
            ty: self.ty,
        };
        match value {
            Value::Bool(v) => visitor.visit_bool(v),
            Value::U8(v) => visitor.visit_u8(v),
            Value::U16(v) => visitor.visit_u16(v),
            Value::U32(v) => visitor.visit_u32(v),
            Value::U64(v) => visitor.visit_u64(v),
            Value::S8(v) => visitor.visit_i8(v),
            Value::S16(v) => visitor.visit_i16(v),
            Value::S32(v) => visitor.visit_i32(v),
            Value::S64(v) => visitor.visit_i64(v),
            Value::F32(v) => visitor.visit_f32(v),
            Value::F64(v) => visitor.visit_f64(v),
            Value::Char(v) => visitor.visit_char(v),
            Value::String(v) => visitor.visit_string(v),
            Value::Flags(v) => visitor.visit_u32(v),
            Value::List(items) | Value::Record(items) | Value::Tuple(items)
                if items.is_empty() && this.ty.is_none() =>
            {
                visitor.visit_unit()
            }
            Value::List(items) | Value::Record(items) | Value::Tuple(items) => {
                let types = this.element_types()?;
                visitor.visit_seq(SeqDe {
                    contract,
                    types,
                    items: items.into_iter().enumerate(),
                })
            }
            Value::Option(None) => visitor.visit_none(),
            Value::Option(Some(v)) => {
                let inner = match this.kind()? {
                    Kind::Def(TypeDefKind::Option(t)) => t,
                    _ => return Err(AbiError("an option value of a non-option type".into())),
                };
                visitor.visit_some(De {
                    contract,
                    ty: Some(inner),
                    value: *v,
                })
            }
            Value::Enum(case) => visitor.visit_enum(EnumDe {
                contract,
                case,
                payload: None,
                payload_ty: None,
            }),
            Value::Result(_) => Err(AbiError("unreachable: results are variants here".into())),
            Value::Variant(case, payload) => {
                let payload_ty = this.payload_type(case)?;
                visitor.visit_enum(EnumDe {
                    contract,
                    case,
                    payload: payload.map(|b| *b),
                    payload_ty,
                })
            }
        }
    }

    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, AbiError> {
        match self.value {
            Value::Option(_) => self.deserialize_any(visitor),
            other => Err(AbiError(format!(
                "expected an option, got a {}",
                other.kind()
            ))),
        }
    }

    fn deserialize_unit<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, AbiError> {
        visitor.visit_unit()
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        visitor: V,
    ) -> Result<V::Value, AbiError> {
        visitor.visit_newtype_struct(self)
    }

    fn deserialize_enum<V: Visitor<'de>>(
        self,
        _name: &'static str,
        _variants: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, AbiError> {
        self.deserialize_any(visitor)
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string
        bytes byte_buf unit_struct seq tuple tuple_struct map
        identifier ignored_any
    }

    /// A Rust struct must have the WIT record's fields, by name and in
    /// order: values cross by position, so a reordered or renamed field
    /// would otherwise land in the wrong place.
    fn deserialize_struct<V: Visitor<'de>>(
        self,
        name: &'static str,
        fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, AbiError> {
        let typed = Typed {
            contract: self.contract,
            ty: self.ty,
        };
        if let Kind::Def(TypeDefKind::Record(r)) = typed.kind()? {
            same_fields(name, r, fields.iter().copied())?;
        }
        self.deserialize_any(visitor)
    }
}

/// Checks a Rust struct's field names against a WIT record's (`a_b` is the
/// WIT's `a-b`).
fn same_fields<'n>(
    name: &str,
    record: &wit_parser::Record,
    rust: impl ExactSizeIterator<Item = &'n str>,
) -> Result<(), AbiError> {
    let wit: Vec<&str> = record.fields.iter().map(|f| f.name.as_str()).collect();
    let rust: Vec<&str> = rust.collect();
    let same =
        wit.len() == rust.len() && wit.iter().zip(&rust).all(|(w, r)| super::same_name(w, r));
    if same {
        return Ok(());
    }
    Err(AbiError(format!(
        "the Rust type {name} has fields {rust:?}, the WIT record {wit:?}"
    )))
}

pub(super) struct SeqDe<'a> {
    contract: &'a Contract,
    types: Types<'a>,
    items: std::iter::Enumerate<std::vec::IntoIter<Value>>,
}

impl<'de> de::SeqAccess<'de> for SeqDe<'_> {
    type Error = AbiError;

    fn next_element_seed<T: DeserializeSeed<'de>>(
        &mut self,
        seed: T,
    ) -> Result<Option<T::Value>, AbiError> {
        match self.items.next() {
            None => Ok(None),
            Some((i, value)) => seed
                .deserialize(De {
                    contract: self.contract,
                    ty: Some(self.types.get(i)?),
                    value,
                })
                .map(Some),
        }
    }
}

pub(super) struct EnumDe<'a> {
    contract: &'a Contract,
    case: u32,
    payload: Option<Value>,
    payload_ty: Option<&'a Type>,
}

impl<'de, 'a> de::EnumAccess<'de> for EnumDe<'a> {
    type Error = AbiError;
    type Variant = Self;

    fn variant_seed<V: DeserializeSeed<'de>>(self, seed: V) -> Result<(V::Value, Self), AbiError> {
        let de: de::value::U32Deserializer<AbiError> = self.case.into_deserializer();
        Ok((seed.deserialize(de)?, self))
    }
}

impl<'de> de::VariantAccess<'de> for EnumDe<'_> {
    type Error = AbiError;

    fn unit_variant(self) -> Result<(), AbiError> {
        match self.payload {
            None => Ok(()),
            Some(_) => Err(AbiError(format!("case {} carries a payload", self.case))),
        }
    }

    fn newtype_variant_seed<T: DeserializeSeed<'de>>(self, seed: T) -> Result<T::Value, AbiError> {
        seed.deserialize(De {
            contract: self.contract,
            ty: self.payload_ty,
            value: self.payload.unwrap_or_else(unit),
        })
    }

    fn tuple_variant<V: Visitor<'de>>(
        self,
        _len: usize,
        _visitor: V,
    ) -> Result<V::Value, AbiError> {
        Err(AbiError("tuple variants have no WIT form".into()))
    }

    fn struct_variant<V: Visitor<'de>>(
        self,
        _fields: &'static [&'static str],
        _visitor: V,
    ) -> Result<V::Value, AbiError> {
        Err(AbiError("struct variants have no WIT form".into()))
    }
}
