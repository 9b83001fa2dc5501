//! The Component Model's canonical ABI, performed by the host for engines
//! that run core modules (WasmEdge 0.14 cannot run components).
//!
//! Everything is driven by the WIT in `wit/` through `wit-parser`: sizes,
//! alignments, field offsets and discriminants come from its `SizeAlign`,
//! flattening follows the specification, so a new field or function in the
//! WIT needs no adapter code here. Typed Rust values (the WIT's types as
//! `teller_contract` declares them) cross into [`Value`]s through serde
//! ([`bridge`]), which checks every field name against the WIT.
//!
//! Lifting reads a snapshot of guest memory as a byte slice and checks every
//! pointer, length, alignment, UTF-8 sequence, discriminant, `char` and flag
//! bit: a hostile guest gets an [`AbiError`], never a host panic.

#![forbid(unsafe_code)]

pub mod bridge;
pub mod lift;
pub mod lower;
mod memory;
mod value;

pub use memory::VecMemory;
pub use value::Value;

use std::fmt;
use wit_parser::{
    Function, Int, PackageId, Resolve, SizeAlign, Type, TypeDefKind, WorldItem, WorldKey,
};

/// Flat parameters beyond this many go through memory (spec: MAX_FLAT_PARAMS).
pub const MAX_FLAT_PARAMS: usize = 16;
/// Flat results beyond this many go through memory (spec: MAX_FLAT_RESULTS).
pub const MAX_FLAT_RESULTS: usize = 1;

/// A canonical-ABI violation: by the guest (bad output) or by the host
/// (a value that does not match its WIT type).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AbiError(pub String);

impl fmt::Display for AbiError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for AbiError {}

pub(crate) fn err<T>(message: impl Into<String>) -> Result<T, AbiError> {
    Err(AbiError(message.into()))
}

/// A core wasm value type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FlatType {
    I32,
    I64,
    F32,
    F64,
}

/// A core wasm value, as passed to and returned from core functions.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Flat {
    I32(i32),
    I64(i64),
    F32(f32),
    F64(f64),
}

impl Flat {
    pub fn ty(&self) -> FlatType {
        match self {
            Flat::I32(_) => FlatType::I32,
            Flat::I64(_) => FlatType::I64,
            Flat::F32(_) => FlatType::F32,
            Flat::F64(_) => FlatType::F64,
        }
    }

    fn zero(ty: FlatType) -> Flat {
        match ty {
            FlatType::I32 => Flat::I32(0),
            FlatType::I64 => Flat::I64(0),
            FlatType::F32 => Flat::F32(0.0),
            FlatType::F64 => Flat::F64(0.0),
        }
    }
}

/// The parsed WIT with its memory layout: what both directions consult.
pub struct Contract {
    pub resolve: Resolve,
    pub sizes: SizeAlign,
    package: PackageId,
}

/// One exported function as a core module exposes it.
#[derive(Debug, Clone)]
pub struct ExportFunc {
    /// The core export, e.g. `bank:policy/transfer-check@0.1.0#check`.
    pub name: String,
    /// `cabi_post_` + name: frees what the results point to.
    pub post_return: String,
    pub params: Vec<Type>,
    pub result: Option<Type>,
    /// The core signature's parameters: flat, or one pointer when there are
    /// more than [`MAX_FLAT_PARAMS`].
    pub core_params: Vec<FlatType>,
    /// Whether the parameters go through memory.
    pub params_indirect: bool,
    /// Whether the result comes back as a pointer to memory.
    pub result_indirect: bool,
}

/// One imported function as a core module calls it: the host implements
/// it, lifting the guest's arguments and lowering its result.
#[derive(Debug, Clone)]
pub struct ImportFunc {
    /// The core import's module, e.g. `bank:policy/state@0.2.0`.
    pub module: String,
    /// The core import's name: the function's.
    pub name: String,
    /// Parameters and result as for an export.
    pub func: ExportFunc,
    /// The core signature's parameters: the flat parameters (or one
    /// pointer), then the return pointer when the result goes through memory.
    pub core_params: Vec<FlatType>,
    /// The core signature's results: none when the result goes through
    /// memory.
    pub core_results: Vec<FlatType>,
}

impl Contract {
    /// Parses a WIT document (one package, no dependencies).
    pub fn parse(path: &str, wit: &str) -> Result<Self, AbiError> {
        let mut resolve = Resolve::new();
        let package = resolve
            .push_source(path, wit)
            .map_err(|e| AbiError(format!("invalid WIT {path}: {e:#}")))?;
        let mut sizes = SizeAlign::default();
        sizes.fill(&resolve);
        Ok(Contract {
            resolve,
            sizes,
            package,
        })
    }

    /// The contract every teller guest is built from.
    pub fn bank_policy() -> Result<Self, AbiError> {
        Self::parse("wit/bank-policy.wit", teller_contract::WIT)
    }

    /// The exported function `func` of interface `interface` (by its short
    /// name, such as `transfer-check`).
    pub fn export(&self, interface: &str, func: &str) -> Result<ExportFunc, AbiError> {
        let package = self
            .resolve
            .packages
            .get(self.package)
            .ok_or_else(|| AbiError("the WIT package is missing".into()))?;
        let id = *package
            .interfaces
            .get(interface)
            .ok_or_else(|| AbiError(format!("the WIT has no interface {interface}")))?;
        let function = self
            .resolve
            .interfaces
            .get(id)
            .and_then(|i| i.functions.get(func))
            .ok_or_else(|| AbiError(format!("interface {interface} has no function {func}")))?;
        let qualified = self
            .resolve
            .id_of(id)
            .ok_or_else(|| AbiError(format!("interface {interface} has no name")))?;
        self.export_func(format!("{qualified}#{func}"), function)
    }

    /// The imported function `func` of interface `interface`.
    pub fn import(&self, interface: &str, func: &str) -> Result<ImportFunc, AbiError> {
        let export = self.export(interface, func)?;
        let (module, name) = export
            .name
            .split_once('#')
            .map(|(m, n)| (m.to_string(), n.to_string()))
            .ok_or_else(|| AbiError(format!("{} is not interface#function", export.name)))?;
        let mut core_params = export.core_params.clone();
        let mut core_results = Vec::new();
        if export.result_indirect {
            core_params.push(FlatType::I32);
        } else if let Some(ty) = &export.result {
            self.flatten(ty, &mut core_results)?;
        }
        Ok(ImportFunc {
            module,
            name,
            func: export,
            core_params,
            core_results,
        })
    }

    /// The exports of `world` whose interfaces the host may call, by
    /// (interface short name, function name).
    pub fn world_exports(&self, world: &str) -> Result<Vec<(String, String)>, AbiError> {
        let world_id = self
            .resolve
            .select_world(&[self.package], Some(world))
            .map_err(|e| AbiError(format!("no world {world}: {e:#}")))?;
        let world = self
            .resolve
            .worlds
            .get(world_id)
            .ok_or_else(|| AbiError("world vanished".into()))?;
        let mut out = Vec::new();
        for (key, item) in &world.exports {
            if let (WorldKey::Interface(id), WorldItem::Interface { .. }) = (key, item)
                && let Some(iface) = self.resolve.interfaces.get(*id)
            {
                let name = iface.name.clone().unwrap_or_default();
                out.extend(iface.functions.keys().map(|f| (name.clone(), f.clone())));
            }
        }
        Ok(out)
    }

    fn export_func(&self, name: String, function: &Function) -> Result<ExportFunc, AbiError> {
        let params: Vec<Type> = function.params.iter().map(|p| p.ty).collect();
        let mut flat = Vec::new();
        for ty in &params {
            self.flatten(ty, &mut flat)?;
        }
        let params_indirect = flat.len() > MAX_FLAT_PARAMS;
        let core_params = if params_indirect {
            vec![FlatType::I32]
        } else {
            flat
        };
        let mut results = Vec::new();
        if let Some(ty) = &function.result {
            self.flatten(ty, &mut results)?;
        }
        Ok(ExportFunc {
            post_return: format!("cabi_post_{name}"),
            name,
            params,
            result: function.result,
            core_params,
            params_indirect,
            result_indirect: results.len() > MAX_FLAT_RESULTS,
        })
    }

    /// What `ty` resolves to, through aliases.
    pub fn kind<'a>(&'a self, ty: &'a Type) -> Result<Kind<'a>, AbiError> {
        let mut ty = ty;
        loop {
            let Type::Id(id) = ty else {
                return Ok(Kind::Prim(*ty));
            };
            let def = self
                .resolve
                .types
                .get(*id)
                .ok_or_else(|| AbiError("unknown type id".into()))?;
            match &def.kind {
                TypeDefKind::Type(inner) => ty = inner,
                other => return Ok(Kind::Def(other)),
            }
        }
    }

    pub(crate) fn size(&self, ty: &Type) -> usize {
        self.sizes.size(ty).size_wasm32()
    }

    pub(crate) fn align(&self, ty: &Type) -> usize {
        self.sizes.align(ty).align_wasm32()
    }

    /// Appends the flat core types of `ty` (spec: `flatten_type`).
    pub fn flatten(&self, ty: &Type, out: &mut Vec<FlatType>) -> Result<(), AbiError> {
        match self.kind(ty)? {
            Kind::Prim(p) => out.push(match p {
                Type::U64 | Type::S64 => FlatType::I64,
                Type::F32 => FlatType::F32,
                Type::F64 => FlatType::F64,
                Type::String => {
                    out.extend([FlatType::I32, FlatType::I32]);
                    return Ok(());
                }
                Type::ErrorContext => return err("error-context is not supported"),
                _ => FlatType::I32,
            }),
            Kind::Def(def) => match def {
                TypeDefKind::Record(r) => {
                    for f in &r.fields {
                        self.flatten(&f.ty, out)?;
                    }
                }
                TypeDefKind::Tuple(t) => {
                    for ty in &t.types {
                        self.flatten(ty, out)?;
                    }
                }
                TypeDefKind::List(_) => out.extend([FlatType::I32, FlatType::I32]),
                TypeDefKind::Flags(f) => {
                    if f.flags.len() > 32 {
                        return err("flags with more than 32 labels are not supported");
                    }
                    if !f.flags.is_empty() {
                        out.push(FlatType::I32);
                    }
                }
                TypeDefKind::Enum(_) => out.push(FlatType::I32),
                _ => {
                    let cases = self.cases(def)?;
                    out.push(FlatType::I32);
                    let joined = self.joined_payload(cases)?;
                    out.extend(joined);
                }
            },
        }
        Ok(())
    }

    /// The cases of a variant-like type (variant, option, result).
    pub fn cases<'a>(&'a self, def: &'a TypeDefKind) -> Result<Cases<'a>, AbiError> {
        Ok(match def {
            TypeDefKind::Variant(v) => Cases::Variant(&v.cases),
            TypeDefKind::Option(t) => Cases::Option(t),
            TypeDefKind::Result(r) => Cases::Result(r),
            other => return err(format!("{} is not supported", other.as_str())),
        })
    }

    /// Where a variant's payload starts: after the discriminant, aligned
    /// for the most demanding case (spec: `elem_size_variant`).
    pub(crate) fn payload_offset(&self, cases: Cases<'_>) -> usize {
        let max_align = cases
            .iter()
            .flatten()
            .map(|t| self.align(t))
            .max()
            .unwrap_or(1);
        align_to(tag_size(discriminant(cases.len())), max_align)
    }

    /// The flat payload of a variant: each case flattened, position by
    /// position joined (spec: `flatten_variant`).
    pub(crate) fn joined_payload(&self, cases: Cases<'_>) -> Result<Vec<FlatType>, AbiError> {
        let mut joined: Vec<FlatType> = Vec::new();
        for ty in cases.iter().flatten() {
            let mut flat = Vec::new();
            self.flatten(ty, &mut flat)?;
            for (i, ft) in flat.into_iter().enumerate() {
                match joined.get_mut(i) {
                    Some(have) => *have = join(*have, ft),
                    None => joined.push(ft),
                }
            }
        }
        Ok(joined)
    }
}

/// The cases of a variant-like type, each with its payload type, borrowed
/// from the WIT.
#[derive(Clone, Copy)]
pub enum Cases<'a> {
    Variant(&'a [wit_parser::Case]),
    /// `none`, then `some` with this payload.
    Option(&'a Type),
    /// `ok`, then `err`.
    Result(&'a wit_parser::Result_),
}

impl<'a> Cases<'a> {
    pub fn len(&self) -> usize {
        match self {
            Cases::Variant(cases) => cases.len(),
            Cases::Option(_) | Cases::Result(_) => 2,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Case `i`'s payload type: `None` past the last case, `Some(None)` for
    /// a case without one.
    pub fn get(&self, i: usize) -> Option<Option<&'a Type>> {
        match (self, i) {
            (Cases::Variant(cases), i) => cases.get(i).map(|c| c.ty.as_ref()),
            (Cases::Option(_), 0) => Some(None),
            (Cases::Option(t), 1) => Some(Some(*t)),
            (Cases::Result(r), 0) => Some(r.ok.as_ref()),
            (Cases::Result(r), 1) => Some(r.err.as_ref()),
            _ => None,
        }
    }

    pub fn iter(self) -> impl Iterator<Item = Option<&'a Type>> {
        (0..self.len()).filter_map(move |i| self.get(i))
    }
}

/// A type with aliases resolved.
pub enum Kind<'a> {
    Prim(Type),
    Def(&'a TypeDefKind),
}

fn join(a: FlatType, b: FlatType) -> FlatType {
    match (a, b) {
        (a, b) if a == b => a,
        (FlatType::I32, FlatType::F32) | (FlatType::F32, FlatType::I32) => FlatType::I32,
        _ => FlatType::I64,
    }
}

/// Bytes of a discriminant.
pub(crate) fn tag_size(tag: Int) -> usize {
    match tag {
        Int::U8 => 1,
        Int::U16 => 2,
        Int::U32 => 4,
        Int::U64 => 8,
    }
}

/// Bytes a flags value of `n` labels occupies.
pub(crate) fn flags_size(n: usize) -> usize {
    match n {
        0 => 0,
        1..=8 => 1,
        9..=16 => 2,
        _ => 4,
    }
}

pub(crate) fn align_to(offset: usize, align: usize) -> usize {
    offset.div_ceil(align.max(1)) * align.max(1)
}

/// `case` as an index into `count` cases, or an error.
pub(crate) fn check_case(case: u32, count: usize) -> Result<usize, AbiError> {
    let i = case as usize;
    if i >= count {
        return err(format!(
            "discriminant {case} is out of range ({count} cases)"
        ));
    }
    Ok(i)
}

/// The discriminant type of a variant with `n` cases.
pub(crate) fn discriminant(n: usize) -> Int {
    match n {
        0..=0xff => Int::U8,
        0x100..=0xffff => Int::U16,
        _ => Int::U32,
    }
}

#[cfg(test)]
mod tests;
