//! Lowering: putting the host's arguments into a guest, as flat core values
//! and, for strings, lists and parameters beyond [`MAX_FLAT_PARAMS`], into
//! memory the guest hands out through its `cabi_realloc`.

use super::{
    AbiError, Contract, ExportFunc, Flat, FlatType, Kind, Value, align_to, check_case,
    discriminant, err, flags_size, tag_size,
};
use wit_parser::{Type, TypeDefKind};

/// The guest side of lowering: its allocator and its memory.
pub trait GuestAlloc {
    /// Calls the guest's `cabi_realloc(old_ptr, old_size, align, new_size)`.
    fn realloc(
        &mut self,
        old_ptr: u32,
        old_size: u32,
        align: u32,
        new_size: u32,
    ) -> Result<u32, AbiError>;

    /// Copies `bytes` into guest memory at `ptr`, bounds-checked.
    fn write(&mut self, ptr: u32, bytes: &[u8]) -> Result<(), AbiError>;
}

/// An import's result, lowered.
#[derive(Debug, Clone, PartialEq)]
pub enum Lowered {
    /// The core results.
    Flat(Vec<Flat>),
    /// Bytes for the guest's return pointer, which must be `align`-aligned.
    Memory { bytes: Vec<u8>, align: usize },
}

/// For an import's result, which must not need guest allocations: a host
/// function cannot call back into the guest's `cabi_realloc`.
pub struct NoAlloc;

impl GuestAlloc for NoAlloc {
    fn realloc(&mut self, _: u32, _: u32, _: u32, _: u32) -> Result<u32, AbiError> {
        err("an import's result may not hold strings or lists")
    }

    fn write(&mut self, _: u32, _: &[u8]) -> Result<(), AbiError> {
        err("an import's result may not hold strings or lists")
    }
}

/// Lowers values into one guest.
pub struct Lowerer<'a, A: GuestAlloc> {
    contract: &'a Contract,
    alloc: &'a mut A,
}

impl<'a, A: GuestAlloc> Lowerer<'a, A> {
    pub fn new(contract: &'a Contract, alloc: &'a mut A) -> Self {
        Lowerer { contract, alloc }
    }

    /// The core arguments for calling `func` with `args`.
    pub fn params(&mut self, func: &ExportFunc, args: &[Value]) -> Result<Vec<Flat>, AbiError> {
        check_arity(func, args)?;
        let mut flat = Vec::new();
        if func.params_indirect {
            // Spilled: one pointer to the parameters laid out as a tuple.
            let (size, align) = spilled_layout(self.contract, func);
            let mut buf = vec![0u8; size];
            let mut offset = 0;
            for (ty, v) in func.params.iter().zip(args) {
                offset = align_to(offset, self.contract.align(ty));
                self.store(v, ty, &mut buf, offset)?;
                offset += self.contract.size(ty);
            }
            let ptr = self.alloc(buf.len(), align)?;
            self.alloc.write(ptr, &buf)?;
            flat.push(Flat::I32(ptr as i32));
        } else {
            for (ty, v) in func.params.iter().zip(args) {
                self.lower_flat(v, ty, &mut flat)?;
            }
        }
        Ok(flat)
    }

    /// Lowers an imported function's result: flat values to return, or, when
    /// the result goes through memory, the bytes to write at the guest's
    /// return pointer (with the alignment that pointer must have).
    pub fn result(&mut self, func: &ExportFunc, value: &Value) -> Result<Lowered, AbiError> {
        let Some(ty) = &func.result else {
            return err(format!("{} has no result", func.name));
        };
        if func.result_indirect {
            let mut buf = vec![0u8; self.contract.size(ty)];
            self.store(value, ty, &mut buf, 0)?;
            return Ok(Lowered::Memory {
                bytes: buf,
                align: self.contract.align(ty),
            });
        }
        let mut flat = Vec::new();
        self.lower_flat(value, ty, &mut flat)?;
        Ok(Lowered::Flat(flat))
    }

    fn alloc(&mut self, size: usize, align: usize) -> Result<u32, AbiError> {
        let size32 = u32::try_from(size)
            .map_err(|_| AbiError(format!("{size} bytes do not fit a 32-bit guest")))?;
        let ptr = self.alloc.realloc(0, 0, align as u32, size32)?;
        if !(ptr as usize).is_multiple_of(align.max(1)) {
            return err(format!(
                "cabi_realloc returned {ptr:#x}, not {align}-byte aligned"
            ));
        }
        Ok(ptr)
    }

    fn string(&mut self, s: &str) -> Result<(u32, u32), AbiError> {
        let ptr = self.alloc(s.len(), 1)?;
        self.alloc.write(ptr, s.as_bytes())?;
        Ok((ptr, s.len() as u32))
    }

    fn list(&mut self, items: &[Value], elem: &Type) -> Result<(u32, u32), AbiError> {
        let (size, align) = (self.contract.size(elem), self.contract.align(elem));
        let total = size
            .checked_mul(items.len())
            .ok_or_else(|| AbiError("list too large".into()))?;
        let mut buf = vec![0u8; total];
        for (i, item) in items.iter().enumerate() {
            self.store(item, elem, &mut buf, i * size)?;
        }
        let ptr = self.alloc(total, align)?;
        self.alloc.write(ptr, &buf)?;
        let len = u32::try_from(items.len()).map_err(|_| AbiError("list too long".into()))?;
        Ok((ptr, len))
    }

    /// Stores `v` into `buf` at `offset` (spec: `store`); strings and lists
    /// it holds are allocated in the guest.
    fn store(
        &mut self,
        v: &Value,
        ty: &Type,
        buf: &mut [u8],
        offset: usize,
    ) -> Result<(), AbiError> {
        let mut put = |bytes: &[u8]| -> Result<(), AbiError> {
            buf.get_mut(offset..offset + bytes.len())
                .ok_or_else(|| AbiError("store out of its buffer".into()))?
                .copy_from_slice(bytes);
            Ok(())
        };
        match (self.contract.kind(ty)?, v) {
            (Kind::Prim(Type::Bool), Value::Bool(b)) => put(&[u8::from(*b)]),
            (Kind::Prim(Type::U8), Value::U8(x)) => put(&x.to_le_bytes()),
            (Kind::Prim(Type::S8), Value::S8(x)) => put(&x.to_le_bytes()),
            (Kind::Prim(Type::U16), Value::U16(x)) => put(&x.to_le_bytes()),
            (Kind::Prim(Type::S16), Value::S16(x)) => put(&x.to_le_bytes()),
            (Kind::Prim(Type::U32), Value::U32(x)) => put(&x.to_le_bytes()),
            (Kind::Prim(Type::S32), Value::S32(x)) => put(&x.to_le_bytes()),
            (Kind::Prim(Type::U64), Value::U64(x)) => put(&x.to_le_bytes()),
            (Kind::Prim(Type::S64), Value::S64(x)) => put(&x.to_le_bytes()),
            (Kind::Prim(Type::F32), Value::F32(x)) => put(&x.to_bits().to_le_bytes()),
            (Kind::Prim(Type::F64), Value::F64(x)) => put(&x.to_bits().to_le_bytes()),
            (Kind::Prim(Type::Char), Value::Char(c)) => put(&u32::from(*c).to_le_bytes()),
            (Kind::Prim(Type::String), Value::String(s)) => {
                let (ptr, len) = self.string(s)?;
                put(&ptr.to_le_bytes())?;
                store_u32(buf, offset + 4, len)
            }
            (Kind::Def(TypeDefKind::List(elem)), Value::List(items)) => {
                let (ptr, len) = self.list(items, elem)?;
                store_u32(buf, offset, ptr)?;
                store_u32(buf, offset + 4, len)
            }
            (Kind::Def(TypeDefKind::Record(r)), Value::Record(fields)) => {
                let types = r.fields.iter().map(|f| &f.ty);
                self.store_fields(fields, types, buf, offset)
            }
            (Kind::Def(TypeDefKind::Tuple(t)), Value::Tuple(items)) => {
                self.store_fields(items, t.types.iter(), buf, offset)
            }
            (Kind::Def(TypeDefKind::Flags(f)), Value::Flags(bits)) => {
                let bytes = bits.to_le_bytes();
                put(bytes.get(..flags_size(f.flags.len())).unwrap_or_default())
            }
            (Kind::Def(TypeDefKind::Enum(e)), Value::Enum(case)) => {
                check_case(*case, e.cases.len())?;
                let size = tag_size(discriminant(e.cases.len()));
                put(case.to_le_bytes().get(..size).unwrap_or_default())
            }
            (Kind::Def(def), v) if is_variant_like(def) => {
                let cases = self.contract.cases(def)?;
                let (case, payload) = split_case(def, v)?;
                let payload_ty = cases.get(check_case(case, cases.len())?).flatten();
                let size = tag_size(discriminant(cases.len()));
                put(case.to_le_bytes().get(..size).unwrap_or_default())?;
                match (payload_ty, payload) {
                    (Some(t), Some(p)) => {
                        let at = offset + self.contract.payload_offset(cases);
                        self.store(p, t, buf, at)
                    }
                    (None, None) => Ok(()),
                    _ => err(format!("case {case} payload does not match its type")),
                }
            }
            (_, v) => err(format!("a {} value does not match its WIT type", v.kind())),
        }
    }

    fn store_fields<'t>(
        &mut self,
        values: &[Value],
        types: impl ExactSizeIterator<Item = &'t Type>,
        buf: &mut [u8],
        base: usize,
    ) -> Result<(), AbiError> {
        if values.len() != types.len() {
            return err(format!("{} fields given for {}", values.len(), types.len()));
        }
        let mut offset = 0;
        for (v, ty) in values.iter().zip(types) {
            offset = align_to(offset, self.contract.align(ty));
            self.store(v, ty, buf, base + offset)?;
            offset += self.contract.size(ty);
        }
        Ok(())
    }

    /// Appends `v`'s flat core values (spec: `lower_flat`).
    fn lower_flat(&mut self, v: &Value, ty: &Type, out: &mut Vec<Flat>) -> Result<(), AbiError> {
        match (self.contract.kind(ty)?, v) {
            (Kind::Prim(Type::Bool), Value::Bool(b)) => out.push(Flat::I32(i32::from(*b))),
            (Kind::Prim(Type::U8), Value::U8(x)) => out.push(Flat::I32(i32::from(*x))),
            (Kind::Prim(Type::S8), Value::S8(x)) => out.push(Flat::I32(i32::from(*x))),
            (Kind::Prim(Type::U16), Value::U16(x)) => out.push(Flat::I32(i32::from(*x))),
            (Kind::Prim(Type::S16), Value::S16(x)) => out.push(Flat::I32(i32::from(*x))),
            (Kind::Prim(Type::U32), Value::U32(x)) => out.push(Flat::I32(*x as i32)),
            (Kind::Prim(Type::S32), Value::S32(x)) => out.push(Flat::I32(*x)),
            (Kind::Prim(Type::U64), Value::U64(x)) => out.push(Flat::I64(*x as i64)),
            (Kind::Prim(Type::S64), Value::S64(x)) => out.push(Flat::I64(*x)),
            (Kind::Prim(Type::F32), Value::F32(x)) => out.push(Flat::F32(*x)),
            (Kind::Prim(Type::F64), Value::F64(x)) => out.push(Flat::F64(*x)),
            (Kind::Prim(Type::Char), Value::Char(c)) => out.push(Flat::I32(u32::from(*c) as i32)),
            (Kind::Prim(Type::String), Value::String(s)) => {
                let (ptr, len) = self.string(s)?;
                out.extend([Flat::I32(ptr as i32), Flat::I32(len as i32)]);
            }
            (Kind::Def(TypeDefKind::List(elem)), Value::List(items)) => {
                let (ptr, len) = self.list(items, elem)?;
                out.extend([Flat::I32(ptr as i32), Flat::I32(len as i32)]);
            }
            (Kind::Def(TypeDefKind::Record(r)), Value::Record(fields)) => {
                if fields.len() != r.fields.len() {
                    return err(format!(
                        "{} fields given for {}",
                        fields.len(),
                        r.fields.len()
                    ));
                }
                for (f, v) in r.fields.iter().zip(fields) {
                    self.lower_flat(v, &f.ty, out)?;
                }
            }
            (Kind::Def(TypeDefKind::Tuple(t)), Value::Tuple(items)) => {
                if items.len() != t.types.len() {
                    return err(format!("{} items given for {}", items.len(), t.types.len()));
                }
                for (ty, v) in t.types.iter().zip(items) {
                    self.lower_flat(v, ty, out)?;
                }
            }
            (Kind::Def(TypeDefKind::Flags(f)), Value::Flags(bits)) => {
                if !f.flags.is_empty() {
                    out.push(Flat::I32(*bits as i32));
                }
            }
            (Kind::Def(TypeDefKind::Enum(e)), Value::Enum(case)) => {
                check_case(*case, e.cases.len())?;
                out.push(Flat::I32(*case as i32));
            }
            (Kind::Def(def), v) if is_variant_like(def) => {
                let cases = self.contract.cases(def)?;
                let (case, payload) = split_case(def, v)?;
                let payload_ty = cases.get(check_case(case, cases.len())?).flatten();
                let joined = self.contract.joined_payload(cases)?;
                out.push(Flat::I32(case as i32));
                let mut own = Vec::new();
                match (payload_ty, payload) {
                    (Some(t), Some(p)) => self.lower_flat(p, t, &mut own)?,
                    (None, None) => {}
                    _ => return err(format!("case {case} payload does not match its type")),
                }
                for (i, want) in joined.iter().enumerate() {
                    out.push(match own.get(i) {
                        Some(have) => coerce(*have, *want)?,
                        None => Flat::zero(*want),
                    });
                }
            }
            (_, v) => return err(format!("a {} value does not match its WIT type", v.kind())),
        }
        Ok(())
    }
}

/// The `cabi_realloc(0, 0, align, size)` calls that lowering `args` as
/// `func`'s parameters makes, as `(align, size)`, in the order
/// [`Lowerer::params`] makes them; nothing is stored. An engine that makes
/// a call's allocations in one entry into the guest plans them with this,
/// which visits only strings and lists, then lowers into what it got.
pub fn allocations(
    contract: &Contract,
    func: &ExportFunc,
    args: &[Value],
) -> Result<Vec<(u32, u32)>, AbiError> {
    check_arity(func, args)?;
    let mut out = Vec::new();
    for (ty, v) in func.params.iter().zip(args) {
        plan(contract, v, ty, &mut out)?;
    }
    if func.params_indirect {
        // The spilled parameters' tuple, allocated after what they hold.
        let (size, align) = spilled_layout(contract, func);
        request(&mut out, align, size)?;
    }
    Ok(out)
}

fn check_arity(func: &ExportFunc, args: &[Value]) -> Result<(), AbiError> {
    if args.len() != func.params.len() {
        return err(format!(
            "{} takes {} arguments, got {}",
            func.name,
            func.params.len(),
            args.len()
        ));
    }
    Ok(())
}

/// Size (rounded up to the alignment) and alignment of `func`'s parameters
/// laid out as one tuple, as they are when they spill to memory.
fn spilled_layout(contract: &Contract, func: &ExportFunc) -> (usize, usize) {
    let (mut size, mut align) = (0usize, 1usize);
    for ty in &func.params {
        let a = contract.align(ty);
        size = align_to(size, a) + contract.size(ty);
        align = align.max(a);
    }
    (align_to(size, align), align)
}

/// Appends the allocations lowering `v` makes: a list's elements' own
/// before the list's.
fn plan(
    contract: &Contract,
    v: &Value,
    ty: &Type,
    out: &mut Vec<(u32, u32)>,
) -> Result<(), AbiError> {
    match (contract.kind(ty)?, v) {
        (Kind::Prim(Type::String), Value::String(s)) => request(out, 1, s.len()),
        (Kind::Def(TypeDefKind::List(elem)), Value::List(items)) => {
            for item in items {
                plan(contract, item, elem, out)?;
            }
            let total = contract
                .size(elem)
                .checked_mul(items.len())
                .ok_or_else(|| AbiError("list too large".into()))?;
            request(out, contract.align(elem), total)
        }
        (Kind::Def(TypeDefKind::Record(r)), Value::Record(fields))
            if fields.len() == r.fields.len() =>
        {
            for (f, v) in r.fields.iter().zip(fields) {
                plan(contract, v, &f.ty, out)?;
            }
            Ok(())
        }
        (Kind::Def(TypeDefKind::Tuple(t)), Value::Tuple(items)) if items.len() == t.types.len() => {
            for (ty, v) in t.types.iter().zip(items) {
                plan(contract, v, ty, out)?;
            }
            Ok(())
        }
        (Kind::Def(def), v) if is_variant_like(def) => {
            let cases = contract.cases(def)?;
            let (case, payload) = split_case(def, v)?;
            match (cases.get(check_case(case, cases.len())?).flatten(), payload) {
                (Some(t), Some(p)) => plan(contract, p, t, out),
                (None, None) => Ok(()),
                _ => err(format!("case {case} payload does not match its type")),
            }
        }
        // Other scalars, flags and enums allocate nothing; a scalar of the
        // wrong scalar type is refused by the lowering itself.
        (Kind::Prim(ty), v) if ty != Type::String && is_scalar(v) => Ok(()),
        (Kind::Def(TypeDefKind::Flags(_) | TypeDefKind::Enum(_)), v) if is_scalar(v) => Ok(()),
        (_, v) => err(format!("a {} value does not match its WIT type", v.kind())),
    }
}

/// A value that holds no other value.
fn is_scalar(v: &Value) -> bool {
    !matches!(
        v,
        Value::String(_)
            | Value::List(_)
            | Value::Record(_)
            | Value::Tuple(_)
            | Value::Variant(..)
            | Value::Option(_)
            | Value::Result(_)
    )
}

fn request(out: &mut Vec<(u32, u32)>, align: usize, size: usize) -> Result<(), AbiError> {
    let size = u32::try_from(size)
        .map_err(|_| AbiError(format!("{size} bytes do not fit a 32-bit guest")))?;
    out.push((align as u32, size));
    Ok(())
}

fn store_u32(buf: &mut [u8], offset: usize, v: u32) -> Result<(), AbiError> {
    buf.get_mut(offset..offset + 4)
        .ok_or_else(|| AbiError("store out of its buffer".into()))?
        .copy_from_slice(&v.to_le_bytes());
    Ok(())
}

fn is_variant_like(def: &TypeDefKind) -> bool {
    matches!(
        def,
        TypeDefKind::Variant(_) | TypeDefKind::Option(_) | TypeDefKind::Result(_)
    )
}

/// The case index and payload of a variant, option or result value.
fn split_case<'v>(def: &TypeDefKind, v: &'v Value) -> Result<(u32, Option<&'v Value>), AbiError> {
    Ok(match (def, v) {
        (TypeDefKind::Variant(_), Value::Variant(case, p)) => (*case, p.as_deref()),
        (TypeDefKind::Option(_), Value::Option(None)) => (0, None),
        (TypeDefKind::Option(_), Value::Option(Some(p))) => (1, Some(p)),
        (TypeDefKind::Result(_), Value::Result(Ok(p))) => (0, p.as_deref()),
        (TypeDefKind::Result(_), Value::Result(Err(p))) => (1, p.as_deref()),
        (def, v) => {
            return err(format!(
                "a {} value does not match the WIT {}",
                v.kind(),
                def.as_str()
            ));
        }
    })
}

/// Widens a case's flat value to the variant's joined type (spec:
/// `lower_flat_variant`).
fn coerce(have: Flat, want: FlatType) -> Result<Flat, AbiError> {
    Ok(match (have, want) {
        (Flat::F32(x), FlatType::I32) => Flat::I32(x.to_bits() as i32),
        (Flat::I32(x), FlatType::I64) => Flat::I64(i64::from(x as u32)),
        (Flat::F32(x), FlatType::I64) => Flat::I64(i64::from(x.to_bits())),
        (Flat::F64(x), FlatType::I64) => Flat::I64(x.to_bits() as i64),
        (v, w) if v.ty() == w => v,
        (v, w) => return err(format!("cannot widen {:?} to {w:?}", v.ty())),
    })
}
