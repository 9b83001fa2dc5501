//! Typed Rust values to and from [`Value`]s, through serde, guided by the
//! WIT type. The bindgen types in [`crate::wit`] derive `Serialize` and
//! `Deserialize`; fields go in declaration order (the WIT's), cases by index,
//! so any type the WIT declares crosses without code written for it.

use super::{AbiError, Contract, Kind, Value};
use serde::de::{self, DeserializeSeed, IntoDeserializer, Visitor};
use serde::ser::{self, Impossible, Serialize};
use wit_parser::{Type, TypeDefKind};

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
pub fn from_value<T: de::DeserializeOwned>(
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

impl ser::Error for AbiError {
    fn custom<T: std::fmt::Display>(msg: T) -> Self {
        AbiError(msg.to_string())
    }
}

impl de::Error for AbiError {
    fn custom<T: std::fmt::Display>(msg: T) -> Self {
        AbiError(msg.to_string())
    }
}

fn mismatch<T>(what: &str, ty: Option<&Type>) -> Result<T, AbiError> {
    Err(AbiError(format!(
        "a Rust {what} does not match the WIT type {ty:?}"
    )))
}

/// The value standing for "no payload" (`()` in Rust).
fn unit() -> Value {
    Value::Tuple(Vec::new())
}

/// Serializes into a [`Value`]; `ty: None` accepts only `()` (a case
/// without payload).
struct Ser<'a> {
    contract: &'a Contract,
    ty: Option<&'a Type>,
}

impl<'a> Ser<'a> {
    fn kind(&self) -> Result<Kind<'a>, AbiError> {
        match self.ty {
            Some(ty) => self.contract.kind(ty),
            None => Err(AbiError("a value was given where the WIT has none".into())),
        }
    }

    fn int(self, v: i128) -> Result<Value, AbiError> {
        let ty = self.ty;
        let range = |_| AbiError(format!("{v} is out of range for {ty:?}"));
        Ok(match self.kind()? {
            Kind::Prim(Type::U8) => Value::U8(u8::try_from(v).map_err(range)?),
            Kind::Prim(Type::U16) => Value::U16(u16::try_from(v).map_err(range)?),
            Kind::Prim(Type::U32) => Value::U32(u32::try_from(v).map_err(range)?),
            Kind::Prim(Type::U64) => Value::U64(u64::try_from(v).map_err(range)?),
            Kind::Prim(Type::S8) => Value::S8(i8::try_from(v).map_err(range)?),
            Kind::Prim(Type::S16) => Value::S16(i16::try_from(v).map_err(range)?),
            Kind::Prim(Type::S32) => Value::S32(i32::try_from(v).map_err(range)?),
            Kind::Prim(Type::S64) => Value::S64(i64::try_from(v).map_err(range)?),
            Kind::Def(TypeDefKind::Flags(_)) => Value::Flags(u32::try_from(v).map_err(range)?),
            _ => return mismatch("integer", ty),
        })
    }

    /// A case of an enum, variant or result, by index.
    fn case<T: Serialize + ?Sized>(
        self,
        index: u32,
        payload: Option<&T>,
    ) -> Result<Value, AbiError> {
        let Kind::Def(def) = self.kind()? else {
            return mismatch("enum", self.ty);
        };
        if let TypeDefKind::Enum(_) = def {
            return match payload {
                None => Ok(Value::Enum(index)),
                Some(_) => mismatch("enum case with a payload", self.ty),
            };
        }
        let cases = self.contract.cases(def)?;
        let payload_ty = *cases
            .get(index as usize)
            .ok_or_else(|| AbiError(format!("case {index} is out of range for {:?}", self.ty)))?;
        let payload = match (payload_ty, payload) {
            (None, None) => None,
            (ty, Some(p)) => {
                let v = p.serialize(Ser {
                    contract: self.contract,
                    ty,
                })?;
                ty.map(|_| Box::new(v))
            }
            (Some(_), None) => return mismatch("case without its payload", self.ty),
        };
        Ok(match def {
            TypeDefKind::Result(_) if index == 0 => Value::Result(Ok(payload)),
            TypeDefKind::Result(_) => Value::Result(Err(payload)),
            TypeDefKind::Option(_) => Value::Option(payload),
            _ => Value::Variant(index, payload),
        })
    }

    fn seq(self, kind: &'static str) -> Result<SeqSer<'a>, AbiError> {
        let (types, wrap): (Types<'a>, fn(Vec<Value>) -> Value) = match (kind, self.kind()?) {
            ("seq", Kind::Def(TypeDefKind::List(elem))) => (Types::Repeat(elem), Value::List),
            ("tuple", Kind::Def(TypeDefKind::Tuple(t))) => {
                (Types::Fixed(t.types.iter().collect()), Value::Tuple)
            }
            ("struct", Kind::Def(TypeDefKind::Record(r))) => (
                Types::Fixed(r.fields.iter().map(|f| &f.ty).collect()),
                Value::Record,
            ),
            _ => return mismatch(kind, self.ty),
        };
        Ok(SeqSer {
            contract: self.contract,
            types,
            items: Vec::new(),
            wrap,
        })
    }
}

enum Types<'a> {
    Repeat(&'a Type),
    Fixed(Vec<&'a Type>),
}

impl<'a> Types<'a> {
    fn get(&self, i: usize) -> Result<&'a Type, AbiError> {
        match self {
            Types::Repeat(t) => Ok(t),
            Types::Fixed(v) => v
                .get(i)
                .copied()
                .ok_or_else(|| AbiError(format!("more than {} fields or items", v.len()))),
        }
    }

    fn check_len(&self, n: usize) -> Result<(), AbiError> {
        match self {
            Types::Fixed(v) if v.len() != n => Err(AbiError(format!(
                "{n} fields or items given for {}",
                v.len()
            ))),
            _ => Ok(()),
        }
    }
}

struct SeqSer<'a> {
    contract: &'a Contract,
    types: Types<'a>,
    items: Vec<Value>,
    wrap: fn(Vec<Value>) -> Value,
}

impl SeqSer<'_> {
    fn push<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), AbiError> {
        let ty = self.types.get(self.items.len())?;
        self.items.push(value.serialize(Ser {
            contract: self.contract,
            ty: Some(ty),
        })?);
        Ok(())
    }

    fn finish(self) -> Result<Value, AbiError> {
        self.types.check_len(self.items.len())?;
        Ok((self.wrap)(self.items))
    }
}

impl ser::SerializeSeq for SeqSer<'_> {
    type Ok = Value;
    type Error = AbiError;
    fn serialize_element<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), AbiError> {
        self.push(value)
    }
    fn end(self) -> Result<Value, AbiError> {
        self.finish()
    }
}

impl ser::SerializeTuple for SeqSer<'_> {
    type Ok = Value;
    type Error = AbiError;
    fn serialize_element<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), AbiError> {
        self.push(value)
    }
    fn end(self) -> Result<Value, AbiError> {
        self.finish()
    }
}

impl ser::SerializeTupleStruct for SeqSer<'_> {
    type Ok = Value;
    type Error = AbiError;
    fn serialize_field<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), AbiError> {
        self.push(value)
    }
    fn end(self) -> Result<Value, AbiError> {
        self.finish()
    }
}

impl ser::SerializeStruct for SeqSer<'_> {
    type Ok = Value;
    type Error = AbiError;
    fn serialize_field<T: Serialize + ?Sized>(
        &mut self,
        _key: &'static str,
        value: &T,
    ) -> Result<(), AbiError> {
        self.push(value)
    }
    fn end(self) -> Result<Value, AbiError> {
        self.finish()
    }
}

impl<'a> ser::Serializer for Ser<'a> {
    type Ok = Value;
    type Error = AbiError;
    type SerializeSeq = SeqSer<'a>;
    type SerializeTuple = SeqSer<'a>;
    type SerializeTupleStruct = SeqSer<'a>;
    type SerializeTupleVariant = Impossible<Value, AbiError>;
    type SerializeMap = Impossible<Value, AbiError>;
    type SerializeStruct = SeqSer<'a>;
    type SerializeStructVariant = Impossible<Value, AbiError>;

    fn serialize_bool(self, v: bool) -> Result<Value, AbiError> {
        match self.kind()? {
            Kind::Prim(Type::Bool) => Ok(Value::Bool(v)),
            _ => mismatch("bool", self.ty),
        }
    }
    fn serialize_i8(self, v: i8) -> Result<Value, AbiError> {
        self.int(v.into())
    }
    fn serialize_i16(self, v: i16) -> Result<Value, AbiError> {
        self.int(v.into())
    }
    fn serialize_i32(self, v: i32) -> Result<Value, AbiError> {
        self.int(v.into())
    }
    fn serialize_i64(self, v: i64) -> Result<Value, AbiError> {
        self.int(v.into())
    }
    fn serialize_u8(self, v: u8) -> Result<Value, AbiError> {
        self.int(v.into())
    }
    fn serialize_u16(self, v: u16) -> Result<Value, AbiError> {
        self.int(v.into())
    }
    fn serialize_u32(self, v: u32) -> Result<Value, AbiError> {
        self.int(v.into())
    }
    fn serialize_u64(self, v: u64) -> Result<Value, AbiError> {
        self.int(v.into())
    }
    fn serialize_f32(self, v: f32) -> Result<Value, AbiError> {
        match self.kind()? {
            Kind::Prim(Type::F32) => Ok(Value::F32(v)),
            Kind::Prim(Type::F64) => Ok(Value::F64(v.into())),
            _ => mismatch("f32", self.ty),
        }
    }
    fn serialize_f64(self, v: f64) -> Result<Value, AbiError> {
        match self.kind()? {
            Kind::Prim(Type::F64) => Ok(Value::F64(v)),
            _ => mismatch("f64", self.ty),
        }
    }
    fn serialize_char(self, v: char) -> Result<Value, AbiError> {
        match self.kind()? {
            Kind::Prim(Type::Char) => Ok(Value::Char(v)),
            _ => mismatch("char", self.ty),
        }
    }
    fn serialize_str(self, v: &str) -> Result<Value, AbiError> {
        match self.kind()? {
            Kind::Prim(Type::String) => Ok(Value::String(v.to_string())),
            _ => mismatch("string", self.ty),
        }
    }
    fn serialize_bytes(self, v: &[u8]) -> Result<Value, AbiError> {
        match self.kind()? {
            Kind::Def(TypeDefKind::List(Type::U8)) => {
                Ok(Value::List(v.iter().copied().map(Value::U8).collect()))
            }
            _ => mismatch("byte string", self.ty),
        }
    }
    fn serialize_none(self) -> Result<Value, AbiError> {
        match self.kind()? {
            Kind::Def(TypeDefKind::Option(_)) => Ok(Value::Option(None)),
            _ => mismatch("None", self.ty),
        }
    }
    fn serialize_some<T: Serialize + ?Sized>(self, value: &T) -> Result<Value, AbiError> {
        match self.kind()? {
            Kind::Def(TypeDefKind::Option(inner)) => {
                let v = value.serialize(Ser {
                    contract: self.contract,
                    ty: Some(inner),
                })?;
                Ok(Value::Option(Some(Box::new(v))))
            }
            _ => mismatch("Some", self.ty),
        }
    }
    fn serialize_unit(self) -> Result<Value, AbiError> {
        match self.ty {
            None => Ok(unit()),
            Some(_) => match self.kind()? {
                Kind::Def(TypeDefKind::Tuple(t)) if t.types.is_empty() => Ok(unit()),
                _ => mismatch("()", self.ty),
            },
        }
    }
    fn serialize_unit_struct(self, _name: &'static str) -> Result<Value, AbiError> {
        self.serialize_unit()
    }
    fn serialize_unit_variant(
        self,
        _name: &'static str,
        index: u32,
        _variant: &'static str,
    ) -> Result<Value, AbiError> {
        self.case::<()>(index, None)
    }
    fn serialize_newtype_struct<T: Serialize + ?Sized>(
        self,
        _name: &'static str,
        value: &T,
    ) -> Result<Value, AbiError> {
        value.serialize(self)
    }
    fn serialize_newtype_variant<T: Serialize + ?Sized>(
        self,
        _name: &'static str,
        index: u32,
        _variant: &'static str,
        value: &T,
    ) -> Result<Value, AbiError> {
        self.case(index, Some(value))
    }
    fn serialize_seq(self, _len: Option<usize>) -> Result<SeqSer<'a>, AbiError> {
        self.seq("seq")
    }
    fn serialize_tuple(self, _len: usize) -> Result<SeqSer<'a>, AbiError> {
        self.seq("tuple")
    }
    fn serialize_tuple_struct(
        self,
        _name: &'static str,
        _len: usize,
    ) -> Result<SeqSer<'a>, AbiError> {
        self.seq("tuple")
    }
    fn serialize_tuple_variant(
        self,
        _: &'static str,
        _: u32,
        _: &'static str,
        _: usize,
    ) -> Result<Self::SerializeTupleVariant, AbiError> {
        mismatch("tuple variant", self.ty)
    }
    fn serialize_map(self, _len: Option<usize>) -> Result<Self::SerializeMap, AbiError> {
        mismatch("map", self.ty)
    }
    fn serialize_struct(self, _name: &'static str, _len: usize) -> Result<SeqSer<'a>, AbiError> {
        self.seq("struct")
    }
    fn serialize_struct_variant(
        self,
        _: &'static str,
        _: u32,
        _: &'static str,
        _: usize,
    ) -> Result<Self::SerializeStructVariant, AbiError> {
        mismatch("struct variant", self.ty)
    }
}

/// Deserializes out of a [`Value`]; `ty` says how to read its parts.
struct De<'a> {
    contract: &'a Contract,
    ty: Option<&'a Type>,
    value: Value,
}

/// Where a value sits in the WIT: what [`De`] consults about its type.
#[derive(Clone, Copy)]
struct Typed<'a> {
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
            Kind::Def(TypeDefKind::Tuple(t)) => Types::Fixed(t.types.iter().collect()),
            Kind::Def(TypeDefKind::Record(r)) => {
                Types::Fixed(r.fields.iter().map(|f| &f.ty).collect())
            }
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
            .copied()
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
        bytes byte_buf unit_struct seq tuple tuple_struct map struct
        identifier ignored_any
    }
}

struct SeqDe<'a> {
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

struct EnumDe<'a> {
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
