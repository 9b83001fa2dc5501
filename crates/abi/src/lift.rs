//! Lifting: reading a guest's results out of flat core values and linear
//! memory. The guest is not trusted: every read is bounds-checked, every
//! pointer's alignment, every discriminant, `char`, flag bit and UTF-8
//! sequence validated, and the total work bounded by the memory's size.

use super::{
    AbiError, Contract, ExportFunc, Flat, FlatType, Kind, Value, align_to, check_case,
    discriminant, err, flags_size, tag_size,
};
use wit_parser::{Type, TypeDefKind};

/// Reads values out of one snapshot of guest memory.
pub struct Lifter<'a> {
    contract: &'a Contract,
    memory: &'a [u8],
    /// Values left to lift: a list of zero-sized elements costs no memory,
    /// so its length alone must not decide how much the host allocates.
    budget: usize,
}

impl<'a> Lifter<'a> {
    pub fn new(contract: &'a Contract, memory: &'a [u8]) -> Self {
        Lifter {
            contract,
            memory,
            budget: memory.len().saturating_add(1 << 16),
        }
    }

    /// Lifts `func`'s result from the core function's returned values.
    pub fn results(&mut self, func: &ExportFunc, flat: &[Flat]) -> Result<Option<Value>, AbiError> {
        let Some(ty) = &func.result else {
            return match flat {
                [] => Ok(None),
                _ => err(format!("{} returned values for no result", func.name)),
            };
        };
        if func.result_indirect {
            let [Flat::I32(ptr)] = flat else {
                return err(format!("{} must return one i32 result pointer", func.name));
            };
            let ptr = *ptr as u32 as usize;
            self.check_aligned(ptr, self.contract.align(ty), "result")?;
            return self.load(ty, ptr).map(Some);
        }
        let mut reader = FlatReader::new(flat);
        let value = self.lift_flat(ty, &mut reader)?;
        if !reader.done() {
            return err(format!(
                "{} returned more values than its type has",
                func.name
            ));
        }
        Ok(Some(value))
    }

    /// Lifts the arguments a guest passed to an imported function `func`
    /// (flat, or through one pointer), leaving out the return pointer.
    pub fn params(&mut self, func: &ExportFunc, flat: &[Flat]) -> Result<Vec<Value>, AbiError> {
        if func.params_indirect {
            let Some(Flat::I32(ptr)) = flat.first() else {
                return err(format!("{} takes one i32 parameter pointer", func.name));
            };
            let ptr = *ptr as u32 as usize;
            let align = func
                .params
                .iter()
                .map(|t| self.contract.align(t))
                .max()
                .unwrap_or(1);
            self.check_aligned(ptr, align, "parameter")?;
            let mut offset = 0;
            let mut out = Vec::with_capacity(func.params.len());
            for ty in &func.params {
                offset = align_to(offset, self.contract.align(ty));
                out.push(self.load(ty, ptr + offset)?);
                offset += self.contract.size(ty);
            }
            return Ok(out);
        }
        let mut reader = FlatReader::new(flat);
        let out = func
            .params
            .iter()
            .map(|ty| self.lift_flat(ty, &mut reader))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(out)
    }

    fn spend(&mut self) -> Result<(), AbiError> {
        self.budget = self.budget.checked_sub(1).ok_or_else(|| {
            AbiError("the guest's result is larger than its memory allows".into())
        })?;
        Ok(())
    }

    fn bytes(&self, ptr: usize, len: usize) -> Result<&'a [u8], AbiError> {
        ptr.checked_add(len)
            .and_then(|end| self.memory.get(ptr..end))
            .ok_or_else(|| {
                AbiError(format!(
                    "{len} bytes at {ptr:#x} are outside guest memory ({} bytes)",
                    self.memory.len()
                ))
            })
    }

    fn array<const N: usize>(&self, ptr: usize) -> Result<[u8; N], AbiError> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.bytes(ptr, N)?);
        Ok(out)
    }

    fn u8_at(&self, ptr: usize) -> Result<u8, AbiError> {
        Ok(self.array::<1>(ptr)?[0])
    }

    fn u16_at(&self, ptr: usize) -> Result<u16, AbiError> {
        Ok(u16::from_le_bytes(self.array(ptr)?))
    }

    fn u32_at(&self, ptr: usize) -> Result<u32, AbiError> {
        Ok(u32::from_le_bytes(self.array(ptr)?))
    }

    fn u64_at(&self, ptr: usize) -> Result<u64, AbiError> {
        Ok(u64::from_le_bytes(self.array(ptr)?))
    }

    fn uint_at(&self, ptr: usize, size: usize) -> Result<u32, AbiError> {
        match size {
            0 => Ok(0),
            1 => self.u8_at(ptr).map(u32::from),
            2 => self.u16_at(ptr).map(u32::from),
            _ => self.u32_at(ptr),
        }
    }

    fn check_aligned(&self, ptr: usize, align: usize, what: &str) -> Result<(), AbiError> {
        if !ptr.is_multiple_of(align.max(1)) {
            return err(format!(
                "{what} pointer {ptr:#x} is not {align}-byte aligned"
            ));
        }
        Ok(())
    }

    /// Loads a value of type `ty` stored at `ptr` (spec: `load`).
    pub fn load(&mut self, ty: &Type, ptr: usize) -> Result<Value, AbiError> {
        self.spend()?;
        Ok(match self.contract.kind(ty)? {
            Kind::Prim(p) => match p {
                Type::Bool => Value::Bool(self.u8_at(ptr)? != 0),
                Type::U8 => Value::U8(self.u8_at(ptr)?),
                Type::S8 => Value::S8(self.u8_at(ptr)? as i8),
                Type::U16 => Value::U16(self.u16_at(ptr)?),
                Type::S16 => Value::S16(self.u16_at(ptr)? as i16),
                Type::U32 => Value::U32(self.u32_at(ptr)?),
                Type::S32 => Value::S32(self.u32_at(ptr)? as i32),
                Type::U64 => Value::U64(self.u64_at(ptr)?),
                Type::S64 => Value::S64(self.u64_at(ptr)? as i64),
                Type::F32 => Value::F32(f32::from_bits(self.u32_at(ptr)?)),
                Type::F64 => Value::F64(f64::from_bits(self.u64_at(ptr)?)),
                Type::Char => Value::Char(to_char(self.u32_at(ptr)?)?),
                Type::String => {
                    let (p, len) = (self.u32_at(ptr)?, self.u32_at(ptr.saturating_add(4))?);
                    Value::String(self.string(p, len)?)
                }
                Type::ErrorContext | Type::Id(_) => return err("unsupported type"),
            },
            Kind::Def(def) => match def {
                TypeDefKind::Record(r) => {
                    Value::Record(self.load_fields(r.fields.iter().map(|f| &f.ty), ptr)?)
                }
                TypeDefKind::Tuple(t) => Value::Tuple(self.load_fields(t.types.iter(), ptr)?),
                TypeDefKind::List(elem) => {
                    let (p, len) = (self.u32_at(ptr)?, self.u32_at(ptr.saturating_add(4))?);
                    Value::List(self.list(elem, p, len)?)
                }
                TypeDefKind::Flags(f) => {
                    let bits = self.uint_at(ptr, flags_size(f.flags.len()))?;
                    Value::Flags(check_flags(bits, f.flags.len())?)
                }
                TypeDefKind::Enum(e) => {
                    let size = tag_size(discriminant(e.cases.len()));
                    let case = self.uint_at(ptr, size)?;
                    check_case(case, e.cases.len())?;
                    Value::Enum(case)
                }
                other => {
                    let cases = self.contract.cases(other)?;
                    let case = self.uint_at(ptr, tag_size(discriminant(cases.len())))?;
                    let payload_ty = check_case(case, cases.len()).map(|i| cases.get(i))?;
                    let offset = ptr.saturating_add(self.contract.payload_offset(cases));
                    let payload = match payload_ty.flatten() {
                        Some(t) => Some(Box::new(self.load(t, offset)?)),
                        None => None,
                    };
                    make_case(other, case, payload)
                }
            },
        })
    }

    fn load_fields<'t>(
        &mut self,
        types: impl Iterator<Item = &'t Type>,
        ptr: usize,
    ) -> Result<Vec<Value>, AbiError> {
        let mut offset = 0usize;
        let mut out = Vec::new();
        for ty in types {
            offset = align_to(offset, self.contract.align(ty));
            out.push(self.load(ty, ptr.saturating_add(offset))?);
            offset += self.contract.size(ty);
        }
        Ok(out)
    }

    fn string(&mut self, ptr: u32, len: u32) -> Result<String, AbiError> {
        let bytes = self.bytes(ptr as usize, len as usize)?;
        let s = std::str::from_utf8(bytes)
            .map_err(|e| AbiError(format!("string at {ptr:#x} is not UTF-8: {e}")))?;
        Ok(s.to_string())
    }

    fn list(&mut self, elem: &Type, ptr: u32, len: u32) -> Result<Vec<Value>, AbiError> {
        let (size, align) = (self.contract.size(elem), self.contract.align(elem));
        let ptr = ptr as usize;
        self.check_aligned(ptr, align, "list")?;
        let total = size
            .checked_mul(len as usize)
            .ok_or_else(|| AbiError(format!("list of {len} elements overflows")))?;
        self.bytes(ptr, total)?;
        if len as usize > self.budget {
            return err(format!(
                "list of {len} elements is larger than guest memory allows"
            ));
        }
        let mut out = Vec::with_capacity(len as usize);
        for i in 0..len as usize {
            out.push(self.load(elem, ptr + i * size)?);
        }
        Ok(out)
    }

    /// Lifts a value from flat core values (spec: `lift_flat`).
    pub fn lift_flat(&mut self, ty: &Type, flat: &mut FlatReader<'_>) -> Result<Value, AbiError> {
        self.spend()?;
        Ok(match self.contract.kind(ty)? {
            Kind::Prim(p) => match p {
                Type::Bool => Value::Bool(flat.i32()? != 0),
                Type::U8 => Value::U8(flat.i32()? as u8),
                Type::S8 => Value::S8(flat.i32()? as i8),
                Type::U16 => Value::U16(flat.i32()? as u16),
                Type::S16 => Value::S16(flat.i32()? as i16),
                Type::U32 => Value::U32(flat.i32()? as u32),
                Type::S32 => Value::S32(flat.i32()?),
                Type::U64 => Value::U64(flat.i64()? as u64),
                Type::S64 => Value::S64(flat.i64()?),
                Type::F32 => match flat.next(FlatType::F32)? {
                    Flat::F32(f) => Value::F32(f),
                    _ => return err("expected f32"),
                },
                Type::F64 => match flat.next(FlatType::F64)? {
                    Flat::F64(f) => Value::F64(f),
                    _ => return err("expected f64"),
                },
                Type::Char => Value::Char(to_char(flat.i32()? as u32)?),
                Type::String => {
                    let (p, len) = (flat.i32()? as u32, flat.i32()? as u32);
                    Value::String(self.string(p, len)?)
                }
                Type::ErrorContext | Type::Id(_) => return err("unsupported type"),
            },
            Kind::Def(def) => match def {
                TypeDefKind::Record(r) => Value::Record(
                    r.fields
                        .iter()
                        .map(|f| self.lift_flat(&f.ty, flat))
                        .collect::<Result<_, _>>()?,
                ),
                TypeDefKind::Tuple(t) => Value::Tuple(
                    t.types
                        .iter()
                        .map(|ty| self.lift_flat(ty, flat))
                        .collect::<Result<_, _>>()?,
                ),
                TypeDefKind::List(elem) => {
                    let (p, len) = (flat.i32()? as u32, flat.i32()? as u32);
                    Value::List(self.list(elem, p, len)?)
                }
                TypeDefKind::Flags(f) => {
                    let bits = if f.flags.is_empty() {
                        0
                    } else {
                        flat.i32()? as u32
                    };
                    Value::Flags(check_flags(bits, f.flags.len())?)
                }
                TypeDefKind::Enum(e) => {
                    let case = flat.i32()? as u32;
                    check_case(case, e.cases.len())?;
                    Value::Enum(case)
                }
                other => {
                    let cases = self.contract.cases(other)?;
                    let case = flat.i32()? as u32;
                    let payload_ty = check_case(case, cases.len()).map(|i| cases.get(i))?;
                    let joined = self.contract.joined_payload(cases)?;
                    let mut have = Vec::with_capacity(joined.len());
                    for ft in &joined {
                        have.push(flat.next(*ft)?);
                    }
                    let payload = match payload_ty.flatten() {
                        Some(t) => {
                            let mut want = Vec::new();
                            self.contract.flatten(t, &mut want)?;
                            let coerced = want
                                .iter()
                                .zip(&have)
                                .map(|(w, h)| uncoerce(*h, *w))
                                .collect::<Result<Vec<_>, _>>()?;
                            let mut reader = FlatReader::new(&coerced);
                            Some(Box::new(self.lift_flat(t, &mut reader)?))
                        }
                        None => None,
                    };
                    make_case(other, case, payload)
                }
            },
        })
    }
}

/// Reads flat values in order, checking each one's core type.
pub struct FlatReader<'f> {
    values: &'f [Flat],
    next: usize,
}

impl<'f> FlatReader<'f> {
    pub fn new(values: &'f [Flat]) -> Self {
        FlatReader { values, next: 0 }
    }

    pub fn done(&self) -> bool {
        self.next == self.values.len()
    }

    fn next(&mut self, want: FlatType) -> Result<Flat, AbiError> {
        let v = *self
            .values
            .get(self.next)
            .ok_or_else(|| AbiError("fewer flat values than the type needs".into()))?;
        if v.ty() != want {
            return err(format!("expected a {want:?} flat value, got {:?}", v.ty()));
        }
        self.next += 1;
        Ok(v)
    }

    fn i32(&mut self) -> Result<i32, AbiError> {
        match self.next(FlatType::I32)? {
            Flat::I32(v) => Ok(v),
            _ => err("expected i32"),
        }
    }

    fn i64(&mut self) -> Result<i64, AbiError> {
        match self.next(FlatType::I64)? {
            Flat::I64(v) => Ok(v),
            _ => err("expected i64"),
        }
    }
}

/// Converts a joined variant payload value back to the case's own type
/// (spec: `CoerceValueIter`).
fn uncoerce(have: Flat, want: FlatType) -> Result<Flat, AbiError> {
    Ok(match (have, want) {
        (Flat::I32(x), FlatType::F32) => Flat::F32(f32::from_bits(x as u32)),
        (Flat::I64(x), FlatType::I32) => Flat::I32(x as i32),
        (Flat::I64(x), FlatType::F32) => Flat::F32(f32::from_bits(x as u32)),
        (Flat::I64(x), FlatType::F64) => Flat::F64(f64::from_bits(x as u64)),
        (v, w) if v.ty() == w => v,
        (v, w) => return err(format!("cannot read a {w:?} out of a {:?}", v.ty())),
    })
}

fn to_char(code: u32) -> Result<char, AbiError> {
    char::from_u32(code).ok_or_else(|| AbiError(format!("{code:#x} is not a Unicode scalar value")))
}

fn check_flags(bits: u32, count: usize) -> Result<u32, AbiError> {
    let known = if count >= 32 {
        u32::MAX
    } else {
        (1u32 << count) - 1
    };
    if bits & !known != 0 {
        return err(format!(
            "flags {bits:#x} set bits beyond the {count} labels"
        ));
    }
    Ok(bits)
}

fn make_case(def: &TypeDefKind, case: u32, payload: Option<Box<Value>>) -> Value {
    match def {
        TypeDefKind::Option(_) => Value::Option(payload),
        TypeDefKind::Result(_) if case == 0 => Value::Result(Ok(payload)),
        TypeDefKind::Result(_) => Value::Result(Err(payload)),
        _ => Value::Variant(case, payload),
    }
}
