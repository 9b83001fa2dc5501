//! Rust values into [`Value`]s: serde's serializer, led by the WIT type.

use super::{Types, mismatch, unit};
use crate::{AbiError, Contract, Kind, Value};
use serde::ser::{self, Impossible, Serialize};
use wit_parser::{Type, TypeDefKind};

/// Serializes into a [`Value`]; `ty: None` accepts only `()` (a case
/// without payload).
pub(super) struct Ser<'a> {
    pub(super) contract: &'a Contract,
    pub(super) ty: Option<&'a Type>,
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
        let payload_ty = cases
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
            ("tuple", Kind::Def(TypeDefKind::Tuple(t))) => (Types::Tuple(&t.types), Value::Tuple),
            ("struct", Kind::Def(TypeDefKind::Record(r))) => {
                (Types::Fields(&r.fields), Value::Record)
            }
            _ => return mismatch(kind, self.ty),
        };
        Ok(SeqSer {
            contract: self.contract,
            types,
            items: Vec::with_capacity(types.capacity()),
            wrap,
            record: None,
        })
    }
}

pub(super) struct SeqSer<'a> {
    contract: &'a Contract,
    types: Types<'a>,
    items: Vec<Value>,
    wrap: fn(Vec<Value>) -> Value,
    /// For a record: its WIT fields, whose names the Rust fields must have.
    record: Option<&'a wit_parser::Record>,
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
        key: &'static str,
        value: &T,
    ) -> Result<(), AbiError> {
        if let Some(record) = self.record {
            let at = self.items.len();
            let wit = record.fields.get(at).map(|f| f.name.as_str());
            if !wit.is_some_and(|w| super::same_name(w, key)) {
                return Err(AbiError(format!(
                    "Rust field {at} is {key:?}, the WIT record's is {wit:?}"
                )));
            }
        }
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
        let record = match self.kind()? {
            Kind::Def(TypeDefKind::Record(r)) => Some(r),
            _ => None,
        };
        let mut seq = self.seq("struct")?;
        seq.record = record;
        Ok(seq)
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
