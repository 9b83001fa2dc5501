//! What teller adds to a guest before WasmEdge compiles it: the deadline's
//! stop checks, and one function that makes a call's allocations in one
//! entry.
//!
//! **Stop checks.** WasmEdge's own "interruptible" code tests its
//! executor's stop flag with an atomic exchange (a locked instruction) at
//! every loop and call: on guests that loop over bytes (the audit sealer
//! hashing and escaping a record, the Rego interpreter) that made calls
//! three to four times slower than the same code compiled without it.
//! Instead, teller compiles guests without it and adds its own test where a
//! guest could run on: at the start of every function and of every loop, an
//! atomic load (a plain `mov` on x86, which the compiler may not hoist out
//! of a loop) of a flag in a one-page memory of its own, exported as
//! [`EXPORT`]; a set flag traps (`unreachable`). The watchdog sets it at the
//! deadline.
//!
//! **Batch allocator.** Lowering a call's arguments calls the guest's
//! `cabi_realloc` once per string and list, and every entry into a WasmEdge
//! guest costs about a microsecond: a transfer check made a dozen of them, an
//! audit seal about thirty. A guest that exports `cabi_realloc` gets
//! [`ALLOC_EXPORT`], which reads `(align, size)` pairs the host put in the
//! flag's page from [`STAGE`] on, calls `cabi_realloc(0, 0, align, size)`
//! for each in order, and writes each result over its pair. The guest sees
//! the same calls with the same arguments in the same order as before; only
//! the host's side changes (see `pool::Plan`).
//!
//! The post-return function of one call (`cabi_post_*`, which frees its
//! results) must run before the guest's next call. For each that takes one
//! `i32`, [`after`] names a function that runs it and then the batch
//! allocator: the host lifts a call's results, and the post-return runs in
//! the next call's first entry instead of an entry of its own. The guest
//! sees the same sequence of calls.
//!
//! **Reset.** A guest whose state is its memory and its mutable globals can
//! be put back as it was after instantiation (see `crate::snapshot`): one
//! that changes no table and drops no segment, and whose globals are
//! numbers of its own. Such a guest exports the flag's memory once more as
//! [`RESET_EXPORT`], and its mutable globals as [`global_export`]`(0..)`,
//! so the host can read and set them.

use crate::raw::host::HostModule;
use std::sync::Arc;
use teller_abi::FlatType;
use wasm_encoder::reencode::{Error as ReencodeError, Reencode, utils};
use wasm_encoder::{
    BlockType, CodeSection, ExportKind, Instruction, MemArg, MemArgTarget, MemoryType, ValType,
};

/// The memory holding the stop flag (at offset 0), as the guest exports it.
pub(crate) const EXPORT: &str = "teller:stop";

/// The batch allocator: `(func (param $count i32))`.
pub(crate) const ALLOC_EXPORT: &str = "teller:alloc";

/// The function that runs post-return function `post` (with its `i32`),
/// then the batch allocator: `(func (param $count i32) (param $arg i32))`.
pub(crate) fn after(post: &str) -> String {
    format!("teller:alloc-after:{post}")
}

/// Present (the flag's memory again) when the guest can be reset.
pub(crate) const RESET_EXPORT: &str = "teller:reset";

/// The name the guest's `i`th mutable global is exported under, counted
/// in index order from 0.
pub(crate) fn global_export(i: usize) -> String {
    format!("teller:global:{i}")
}

/// Where in the flag's page the batch allocator's pairs start.
pub(crate) const STAGE: u32 = 8;

/// How many `(align, size)` pairs fit in one batch.
pub(crate) const STAGE_PAIRS: usize = (65536 - STAGE as usize) / 8;

/// What changes in the compiled code when this file's output does: part
/// of the cache key.
pub(crate) const VERSION: &str = "instrument3";

/// `wasm` with the stop checks, a memory for the flag and its export.
/// Custom sections are dropped: among them could be native code compiled
/// elsewhere, which must never run.
pub(crate) fn instrument(wasm: &[u8]) -> Result<Vec<u8>, String> {
    // The guest as it came must be valid without the proposals the flag
    // needs: a guest that could name a second memory or use atomics could
    // clear its own flag (and each memory would get the whole memory cap).
    let features = wasmparser::WasmFeatures::default()
        & !(wasmparser::WasmFeatures::THREADS
            | wasmparser::WasmFeatures::SHARED_EVERYTHING_THREADS
            | wasmparser::WasmFeatures::MULTI_MEMORY);
    wasmparser::Validator::new_with_features(features)
        .validate_all(wasm)
        .map_err(|e| format!("not a module teller runs: {e}"))?;
    // Its one memory is what host functions and the canonical ABI see; the
    // flag's comes after it.
    if let Some(name) = teller_export(wasm)? {
        return Err(format!(
            "a guest may not export {name:?}: names starting with \"teller:\" are teller's own"
        ));
    }
    let memories = memory_count(wasm)?;
    if memories != 1 {
        return Err(format!(
            "a guest must have exactly one memory, this one has {memories}"
        ));
    }
    let mut checks = StopChecks {
        flag: memories,
        memory_section_seen: false,
        export_section_seen: false,
        alloc: BatchAlloc::find(wasm).map_err(|e| format!("not a module teller runs: {e}"))?,
        reset: resettable_globals(wasm).map_err(|e| format!("not a module teller runs: {e}"))?,
    };
    let mut module = wasm_encoder::Module::new();
    let parser = wasmparser::Parser::new(0);
    checks
        .parse_core_module(&mut module, parser, wasm)
        .map_err(|e| format!("cannot add the deadline's checks: {e}"))?;
    Ok(module.finish())
}

/// Where a section of `id` stands among a module's sections.
fn module_order(id: wasm_encoder::SectionId) -> u8 {
    use wasm_encoder::SectionId::*;
    match id {
        Custom => 0,
        Type => 1,
        Import => 2,
        Function => 3,
        Table => 4,
        Memory => 5,
        Tag => 6,
        Global => 7,
        Export => 8,
        Start => 9,
        Element => 10,
        DataCount => 11,
        Code => 12,
        Data => 13,
    }
}

/// The first export whose name is in teller's namespace, if any.
fn teller_export(wasm: &[u8]) -> Result<Option<String>, String> {
    for payload in wasmparser::Parser::new(0).parse_all(wasm) {
        if let wasmparser::Payload::ExportSection(exports) = payload.map_err(|e| e.to_string())? {
            for export in exports {
                let export = export.map_err(|e| e.to_string())?;
                if export.name.starts_with("teller:") {
                    return Ok(Some(export.name.to_string()));
                }
            }
        }
    }
    Ok(None)
}

/// Refuses a guest whose imports teller does not provide, naming each, so
/// that the policy's author reads what to change instead of WasmEdge's
/// "unknown import": a WASI function beyond those granted
/// (`raw::policy_wasi`: no clocks, randomness, files or sockets), a
/// function no host module has (a policy built against another version of
/// `bank:policy`), one whose signature differs from the host's, and any
/// imported memory, table or global. Run on the policy as it came, before
/// the cache is asked, so that a guest compiled before this check existed
/// is refused the same way. Reads no further than the import section.
pub(crate) fn granted_imports(wasm: &[u8], hosts: &[Arc<HostModule>]) -> Result<(), String> {
    use wasmparser::{Payload, TypeRef};
    let bad = |e: wasmparser::BinaryReaderError| format!("not a module teller runs: {e}");
    let mut types = Vec::new();
    let (mut wasi, mut unknown, mut mismatched) = (Vec::new(), Vec::new(), Vec::new());
    for payload in wasmparser::Parser::new(0).parse_all(wasm) {
        match payload.map_err(bad)? {
            Payload::Version { .. } | Payload::CustomSection(_) => {}
            Payload::TypeSection(reader) => {
                for ty in reader.into_iter_err_on_gc_types() {
                    types.push(ty.map_err(bad)?);
                }
            }
            Payload::ImportSection(imports) => {
                for import in imports.into_imports() {
                    let import = import.map_err(bad)?;
                    let named = format!("\"{}\" \"{}\"", import.module, import.name);
                    let TypeRef::Func(index) = import.ty else {
                        unknown.push(format!("{named} (not a function)"));
                        continue;
                    };
                    let Some(ty) = types.get(index as usize) else {
                        return Err(format!("not a module teller runs: {named} has no type"));
                    };
                    let provided = if import.module == crate::raw::POLICY_WASI_MODULE {
                        crate::raw::policy_wasi()
                            .find(|(name, ..)| *name == import.name)
                            .map(|(_, params, results)| Signature::i32s(params, results))
                    } else {
                        hosts
                            .iter()
                            .filter(|host| host.name == import.module)
                            .flat_map(|host| &host.funcs)
                            .find(|func| func.name == import.name)
                            .map(|func| Signature::flat(&func.params, &func.results))
                    };
                    let guest = Signature(ty.params().to_vec(), ty.results().to_vec());
                    match provided {
                        None if import.module == crate::raw::POLICY_WASI_MODULE => {
                            wasi.push(import.name)
                        }
                        None => unknown.push(named),
                        Some(host) if host != guest => {
                            mismatched.push(format!("{named} as {guest} where teller's is {host}"))
                        }
                        Some(_) => {}
                    }
                }
            }
            _ => break,
        }
    }
    let mut refusals = Vec::new();
    if !wasi.is_empty() {
        refusals.push(format!(
            "the guest imports WASI's {}, which teller does not grant a policy: no clocks, \
             randomness, files or sockets, so that a decision depends on its inputs only",
            wasi.join(", ")
        ));
    }
    if !unknown.is_empty() {
        let offered: Vec<String> = hosts
            .iter()
            .map(|host| {
                let funcs: Vec<&str> = host.funcs.iter().map(|f| f.name.as_str()).collect();
                format!("{} ({})", host.name, funcs.join(", "))
            })
            .collect();
        refusals.push(format!(
            "the guest imports {}, which teller does not provide: a policy may import {} and \
             WASI's {} (was it built against another version of bank:policy?)",
            unknown.join(", "),
            offered.join(", "),
            crate::raw::policy_wasi()
                .map(|(name, ..)| name)
                .collect::<Vec<_>>()
                .join(", ")
        ));
    }
    if !mismatched.is_empty() {
        refusals.push(format!("the guest imports {}", mismatched.join(", ")));
    }
    if refusals.is_empty() {
        Ok(())
    } else {
        Err(refusals.join("; "))
    }
}

/// A core function's parameter and result types, written as in the text
/// format for errors.
#[derive(PartialEq)]
struct Signature(Vec<wasmparser::ValType>, Vec<wasmparser::ValType>);

impl Signature {
    fn i32s(params: usize, results: usize) -> Self {
        use wasmparser::ValType::I32;
        Signature(vec![I32; params], vec![I32; results])
    }

    fn flat(params: &[FlatType], results: &[FlatType]) -> Self {
        let core = |types: &[FlatType]| {
            types
                .iter()
                .map(|t| match t {
                    FlatType::I32 => wasmparser::ValType::I32,
                    FlatType::I64 => wasmparser::ValType::I64,
                    FlatType::F32 => wasmparser::ValType::F32,
                    FlatType::F64 => wasmparser::ValType::F64,
                })
                .collect()
        };
        Signature(core(params), core(results))
    }
}

impl std::fmt::Display for Signature {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("(func")?;
        for (word, types) in [("param", &self.0), ("result", &self.1)] {
            if !types.is_empty() {
                write!(f, " ({word}")?;
                for ty in types {
                    write!(f, " {ty}")?;
                }
                f.write_str(")")?;
            }
        }
        f.write_str(")")
    }
}

/// How many memories the module has, imported and defined: the flag's
/// memory comes after them.
fn memory_count(wasm: &[u8]) -> Result<u32, String> {
    let mut count = 0;
    for payload in wasmparser::Parser::new(0).parse_all(wasm) {
        match payload.map_err(|e| e.to_string())? {
            wasmparser::Payload::ImportSection(imports) => {
                for import in imports.into_imports() {
                    if matches!(
                        import.map_err(|e| e.to_string())?.ty,
                        wasmparser::TypeRef::Memory(_)
                    ) {
                        count += 1;
                    }
                }
            }
            wasmparser::Payload::MemorySection(memories) => count += memories.count(),
            _ => {}
        }
    }
    Ok(count)
}

/// The indices of the module's mutable globals when its state is only its
/// memory and those globals (see `crate::snapshot`); `None` when it could
/// keep state elsewhere: a mutable global it imports or of a reference
/// type, an imported memory or table, an instruction that changes a table
/// or drops a segment (a reset cannot undo a `data.drop`).
fn resettable_globals(wasm: &[u8]) -> Result<Option<Vec<u32>>, wasmparser::BinaryReaderError> {
    use wasmparser::{Operator as O, Payload, TypeRef, ValType as V};
    let mut imported = 0u32;
    let mut mutable = Vec::new();
    for payload in wasmparser::Parser::new(0).parse_all(wasm) {
        match payload? {
            Payload::ImportSection(imports) => {
                for import in imports.into_imports() {
                    match import?.ty {
                        TypeRef::Global(g) if g.mutable => return Ok(None),
                        TypeRef::Global(_) => imported += 1,
                        TypeRef::Memory(_) | TypeRef::Table(_) => return Ok(None),
                        _ => {}
                    }
                }
            }
            Payload::GlobalSection(globals) => {
                for (i, global) in globals.into_iter().enumerate() {
                    let ty = global?.ty;
                    if !ty.mutable {
                        continue;
                    }
                    if !matches!(ty.content_type, V::I32 | V::I64 | V::F32 | V::F64) {
                        return Ok(None);
                    }
                    mutable.push(imported + i as u32);
                }
            }
            Payload::CodeSectionEntry(body) => {
                for op in body.get_operators_reader()? {
                    if matches!(
                        op?,
                        O::TableSet { .. }
                            | O::TableGrow { .. }
                            | O::TableFill { .. }
                            | O::TableCopy { .. }
                            | O::TableInit { .. }
                            | O::ElemDrop { .. }
                            | O::MemoryInit { .. }
                            | O::DataDrop { .. }
                    ) {
                        return Ok(None);
                    }
                }
            }
            _ => {}
        }
    }
    Ok(Some(mutable))
}

/// Where the batch allocator goes in a module that can have one.
#[derive(Debug, Clone, PartialEq)]
struct BatchAlloc {
    /// The guest's `cabi_realloc`.
    realloc: u32,
    /// The allocator's type and function index, each after the module's own;
    /// the [`after`] functions' type is the next, and they follow it.
    ty: u32,
    func: u32,
    /// The guest's post-return functions that take one `i32`: export name
    /// and function index.
    posts: Vec<(String, u32)>,
}

impl BatchAlloc {
    /// The module's `cabi_realloc`, when it exports one of the canonical
    /// ABI's type defined in a module with types, functions and exports of
    /// its own (so the allocator has sections to go into).
    fn find(wasm: &[u8]) -> Result<Option<BatchAlloc>, wasmparser::BinaryReaderError> {
        let realloc_type =
            wasmparser::FuncType::new([wasmparser::ValType::I32; 4], [wasmparser::ValType::I32]);
        let post_type = wasmparser::FuncType::new([wasmparser::ValType::I32], []);
        let mut types = Vec::new();
        let mut funcs = Vec::new();
        let mut imported = 0u32;
        let mut exported = None;
        let mut posts = Vec::new();
        let mut has_code = false;
        for payload in wasmparser::Parser::new(0).parse_all(wasm) {
            match payload? {
                wasmparser::Payload::TypeSection(section) => {
                    for ty in section.into_iter_err_on_gc_types() {
                        match ty {
                            Ok(ty) => types.push(ty),
                            // A GC type: no batch allocator, not an error.
                            Err(_) => return Ok(None),
                        }
                    }
                }
                wasmparser::Payload::ImportSection(imports) => {
                    for import in imports.into_imports() {
                        if let wasmparser::TypeRef::Func(_) = import?.ty {
                            imported += 1;
                        }
                    }
                }
                wasmparser::Payload::FunctionSection(section) => {
                    for ty in section {
                        funcs.push(ty?);
                    }
                }
                wasmparser::Payload::ExportSection(exports) => {
                    for export in exports {
                        let export = export?;
                        if export.kind != wasmparser::ExternalKind::Func {
                            continue;
                        }
                        if export.name == "cabi_realloc" {
                            exported = Some(export.index);
                        } else if export.name.starts_with("cabi_post_") {
                            posts.push((export.name.to_string(), export.index));
                        }
                    }
                }
                wasmparser::Payload::CodeSectionStart { .. } => has_code = true,
                _ => {}
            }
        }
        // Only defined functions: an imported one's type is not looked up.
        let type_of = |func: u32| {
            func.checked_sub(imported)
                .and_then(|i| funcs.get(i as usize))
                .and_then(|&ty| types.get(ty as usize))
        };
        let Some(realloc) = exported else {
            return Ok(None);
        };
        if type_of(realloc) != Some(&realloc_type) || !has_code {
            return Ok(None);
        }
        posts.retain(|&(_, func)| type_of(func) == Some(&post_type));
        Ok(Some(BatchAlloc {
            realloc,
            ty: types.len() as u32,
            func: imported + funcs.len() as u32,
            posts,
        }))
    }
}

struct StopChecks {
    /// The flag's memory index.
    flag: u32,
    memory_section_seen: bool,
    export_section_seen: bool,
    /// Added when the guest has a `cabi_realloc` it can call.
    alloc: Option<BatchAlloc>,
    /// The mutable globals to export, when the guest can be reset.
    reset: Option<Vec<u32>>,
}

impl StopChecks {
    /// Everything teller exports from the guest, after its own exports.
    fn teller_exports(&self, exports: &mut wasm_encoder::ExportSection) {
        exports.export(EXPORT, ExportKind::Memory, self.flag);
        if let Some(alloc) = &self.alloc {
            exports.export(ALLOC_EXPORT, ExportKind::Func, alloc.func);
            for (i, (post, _)) in alloc.posts.iter().enumerate() {
                exports.export(&after(post), ExportKind::Func, alloc.func + 1 + i as u32);
            }
        }
        if let Some(globals) = &self.reset {
            exports.export(RESET_EXPORT, ExportKind::Memory, self.flag);
            for (i, &global) in globals.iter().enumerate() {
                exports.export(&global_export(i), ExportKind::Global, global);
            }
        }
    }

    fn flag_memory() -> MemoryType {
        MemoryType {
            minimum: 1,
            maximum: Some(1),
            memory64: false,
            shared: false,
            page_size_log2: None,
        }
    }

    /// `if (i32.atomic.load $flag (i32.const 0)) unreachable end`.
    fn check(&self, f: &mut wasm_encoder::Function) {
        f.instruction(&Instruction::I32Const(0));
        f.instruction(&Instruction::I32AtomicLoad(MemArg {
            offset: 0,
            align: 2,
            target: MemArgTarget::Memory(self.flag),
            ordering: None,
        }));
        f.instruction(&Instruction::If(BlockType::Empty));
        f.instruction(&Instruction::Unreachable);
        f.instruction(&Instruction::End);
    }

    /// A 4-aligned access to the flag's page at `offset` past the address.
    fn stage(&self, offset: u64) -> MemArg {
        MemArg {
            offset,
            align: 2,
            target: MemArgTarget::Memory(self.flag),
            ordering: None,
        }
    }

    /// `(func (param $count i32))`: for each of `$count` pairs from
    /// [`STAGE`] on, `cabi_realloc(0, 0, align, size)`, its result written
    /// over the pair's `align`. The host bounds `$count` by [`STAGE_PAIRS`];
    /// past the page, a load traps.
    fn batch_alloc(&self, realloc: u32) -> wasm_encoder::Function {
        use Instruction as I;
        let (count, done, pair) = (0, 1, 2);
        let mut f = wasm_encoder::Function::new([(2, ValType::I32)]);
        f.instruction(&I::I32Const(STAGE as i32));
        f.instruction(&I::LocalSet(pair));
        f.instruction(&I::Block(BlockType::Empty));
        f.instruction(&I::Loop(BlockType::Empty));
        self.check(&mut f);
        f.instruction(&I::LocalGet(done));
        f.instruction(&I::LocalGet(count));
        f.instruction(&I::I32GeU);
        f.instruction(&I::BrIf(1));
        // The store's address, then cabi_realloc(0, 0, align, size).
        f.instruction(&I::LocalGet(pair));
        f.instruction(&I::I32Const(0));
        f.instruction(&I::I32Const(0));
        f.instruction(&I::LocalGet(pair));
        f.instruction(&I::I32Load(self.stage(0)));
        f.instruction(&I::LocalGet(pair));
        f.instruction(&I::I32Load(self.stage(4)));
        f.instruction(&I::Call(realloc));
        f.instruction(&I::I32Store(self.stage(0)));
        f.instruction(&I::LocalGet(pair));
        f.instruction(&I::I32Const(8));
        f.instruction(&I::I32Add);
        f.instruction(&I::LocalSet(pair));
        f.instruction(&I::LocalGet(done));
        f.instruction(&I::I32Const(1));
        f.instruction(&I::I32Add);
        f.instruction(&I::LocalSet(done));
        f.instruction(&I::Br(0));
        f.instruction(&I::End);
        f.instruction(&I::End);
        f.instruction(&I::End);
        f
    }
}

impl Reencode for StopChecks {
    type Error = std::convert::Infallible;

    fn parse_memory_section(
        &mut self,
        memories: &mut wasm_encoder::MemorySection,
        section: wasmparser::MemorySectionReader<'_>,
    ) -> Result<(), ReencodeError<Self::Error>> {
        utils::parse_memory_section(self, memories, section)?;
        memories.memory(Self::flag_memory());
        self.memory_section_seen = true;
        Ok(())
    }

    fn intersperse_section_hook(
        &mut self,
        module: &mut wasm_encoder::Module,
        after: Option<wasm_encoder::SectionId>,
        before: Option<wasm_encoder::SectionId>,
    ) -> Result<(), ReencodeError<Self::Error>> {
        // A module whose memory is imported gets a memory section, and one
        // without exports an export section, each in its place: by the
        // order sections take in a module, which is not that of their ids
        // (tags, 13, go between memories and globals; `None` after is the
        // module's end).
        let between = |id: wasm_encoder::SectionId| {
            after.is_none_or(|a| module_order(a) < module_order(id))
                && before.is_none_or(|b| module_order(b) > module_order(id))
        };
        if !self.memory_section_seen && between(wasm_encoder::SectionId::Memory) {
            let mut memories = wasm_encoder::MemorySection::new();
            memories.memory(Self::flag_memory());
            module.section(&memories);
            self.memory_section_seen = true;
        }
        if !self.export_section_seen && between(wasm_encoder::SectionId::Export) {
            let mut exports = wasm_encoder::ExportSection::new();
            self.teller_exports(&mut exports);
            module.section(&exports);
            self.export_section_seen = true;
        }
        Ok(())
    }

    fn parse_export_section(
        &mut self,
        exports: &mut wasm_encoder::ExportSection,
        section: wasmparser::ExportSectionReader<'_>,
    ) -> Result<(), ReencodeError<Self::Error>> {
        utils::parse_export_section(self, exports, section)?;
        self.teller_exports(exports);
        self.export_section_seen = true;
        Ok(())
    }

    fn parse_type_section(
        &mut self,
        types: &mut wasm_encoder::TypeSection,
        section: wasmparser::TypeSectionReader<'_>,
    ) -> Result<(), ReencodeError<Self::Error>> {
        utils::parse_type_section(self, types, section)?;
        if self.alloc.is_some() {
            types.ty().function([ValType::I32], []);
            types.ty().function([ValType::I32, ValType::I32], []);
        }
        Ok(())
    }

    fn parse_function_section(
        &mut self,
        functions: &mut wasm_encoder::FunctionSection,
        section: wasmparser::FunctionSectionReader<'_>,
    ) -> Result<(), ReencodeError<Self::Error>> {
        utils::parse_function_section(self, functions, section)?;
        if let Some(alloc) = &self.alloc {
            functions.function(alloc.ty);
            for _ in &alloc.posts {
                functions.function(alloc.ty + 1);
            }
        }
        Ok(())
    }

    fn parse_code_section(
        &mut self,
        code: &mut CodeSection,
        section: wasmparser::CodeSectionReader<'_>,
    ) -> Result<(), ReencodeError<Self::Error>> {
        utils::parse_code_section(self, code, section)?;
        if let Some(alloc) = &self.alloc {
            code.function(&self.batch_alloc(alloc.realloc));
            for &(_, post) in &alloc.posts {
                // `(call $post (local.get $arg)) (call $alloc (local.get $count))`
                let mut f = wasm_encoder::Function::new([]);
                f.instruction(&Instruction::LocalGet(1));
                f.instruction(&Instruction::Call(post));
                f.instruction(&Instruction::LocalGet(0));
                f.instruction(&Instruction::Call(alloc.func));
                f.instruction(&Instruction::End);
                code.function(&f);
            }
        }
        Ok(())
    }

    fn parse_function_body(
        &mut self,
        code: &mut CodeSection,
        func: wasmparser::FunctionBody<'_>,
    ) -> Result<(), ReencodeError<Self::Error>> {
        let mut f = self.new_function_with_parsed_locals(&func)?;
        self.check(&mut f);
        let mut reader = func.get_operators_reader()?;
        while !reader.eof() {
            let op = reader.read()?;
            let is_loop = matches!(op, wasmparser::Operator::Loop { .. });
            f.instruction(&self.instruction(op)?);
            if is_loop {
                self.check(&mut f);
            }
        }
        code.function(&f);
        Ok(())
    }

    fn parse_custom_section(
        &mut self,
        _module: &mut wasm_encoder::Module,
        _section: wasmparser::CustomSectionReader<'_>,
    ) -> Result<(), ReencodeError<Self::Error>> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_function_and_loop_gets_a_check_and_the_flag_is_exported() {
        // (memory 1) (func (export "f") (loop (br 0))) (func)
        let wasm = wat_free_module();
        let out = instrument(&wasm).unwrap();
        wasmparser::Validator::new_with_features(wasmparser::WasmFeatures::all())
            .validate_all(&out)
            .unwrap();
        let mut loads = 0;
        for payload in wasmparser::Parser::new(0).parse_all(&out) {
            if let wasmparser::Payload::CodeSectionEntry(body) = payload.unwrap() {
                for op in body.get_operators_reader().unwrap() {
                    if let wasmparser::Operator::I32AtomicLoad { memarg } = op.unwrap() {
                        assert_eq!(memarg.target, wasmparser::MemArgTarget::Memory(1));
                        loads += 1;
                    }
                }
            }
        }
        // Two function entries and one loop.
        assert_eq!(loads, 3);
        assert!(exports(&out).contains(&(EXPORT.into(), wasmparser::ExternalKind::Memory, 1)));
    }

    /// Every export of `wasm`: name, kind, index.
    fn exports(wasm: &[u8]) -> Vec<(String, wasmparser::ExternalKind, u32)> {
        let mut all = Vec::new();
        for payload in wasmparser::Parser::new(0).parse_all(wasm) {
            if let wasmparser::Payload::ExportSection(exports) = payload.unwrap() {
                for e in exports {
                    let e = e.unwrap();
                    all.push((e.name.to_string(), e.kind, e.index));
                }
            }
        }
        all
    }

    fn names(wasm: &[u8]) -> Vec<String> {
        exports(wasm).into_iter().map(|(name, ..)| name).collect()
    }

    /// A guest whose state is its memory and its numeric globals is marked
    /// for reset, with its mutable globals exported in index order (after
    /// the one it imports); one that could keep state anywhere else is not.
    #[test]
    fn only_a_guest_whose_state_is_memory_and_globals_is_marked_for_reset() {
        let resettable = wat::parse_str(
            r#"(module (import "env" "g" (global i32)) (memory 1)
                 (global (mut i32) (i32.const 1)) (global i64 (i64.const 2))
                 (global (mut f64) (f64.const 3)) (table 1 funcref)
                 (func (memory.fill (i32.const 0) (i32.const 0) (i32.const 1))))"#,
        )
        .unwrap();
        let out = instrument(&resettable).unwrap();
        wasmparser::Validator::new_with_features(wasmparser::WasmFeatures::all())
            .validate_all(&out)
            .unwrap();
        let global = wasmparser::ExternalKind::Global;
        assert_eq!(
            exports(&out),
            [
                (EXPORT.into(), wasmparser::ExternalKind::Memory, 1),
                (RESET_EXPORT.into(), wasmparser::ExternalKind::Memory, 1),
                (global_export(0), global, 1),
                (global_export(1), global, 3),
            ]
        );
        for (why, wat) in [
            (
                "a table.set",
                "(table 1 funcref) (func (table.set (i32.const 0) (ref.null func)))",
            ),
            (
                "a table.grow",
                "(table 1 funcref) (func (drop (table.grow (ref.null func) (i32.const 1))))",
            ),
            ("a data.drop", r#"(data "x") (func (data.drop 0))"#),
            (
                "a memory.init",
                r#"(data "x") (func (memory.init 0 (i32.const 0) (i32.const 0) (i32.const 1)))"#,
            ),
            (
                "an elem.drop",
                "(table 1 funcref) (elem func 0) (func (elem.drop 0))",
            ),
            (
                "an imported mutable global",
                r#"(import "env" "g" (global (mut i32)))"#,
            ),
            (
                "a reference global",
                "(global (mut funcref) (ref.null func))",
            ),
            (
                "an imported table",
                r#"(import "env" "t" (table 1 funcref))"#,
            ),
        ] {
            let wasm = wat::parse_str(format!("(module {wat} (memory 1))")).unwrap();
            let out = instrument(&wasm).unwrap_or_else(|e| panic!("{why}: {e}"));
            assert_eq!(
                names(&out),
                [EXPORT],
                "a guest with {why} was marked for reset"
            );
        }
    }

    /// `(func (export "rec") (param i32) (if (local.get 0) (then (call 0
    /// (local.get 0 - 1)) (call 0 (local.get 0 - 1)))))` and `(func (export
    /// "spin") (loop (br 0)))` and `(memory 1)`, by hand.
    const RUNAWAY: &[u8] = &[
        0x00, 0x61, 0x73, 0x6d, 0x01, 0x00, 0x00, 0x00, // magic, version
        0x01, 0x08, 0x02, 0x60, 0x01, 0x7f, 0x00, 0x60, 0x00, 0x00, // types
        0x03, 0x03, 0x02, 0x00, 0x01, // funcs
        0x05, 0x03, 0x01, 0x00, 0x01, // memory: 1 page
        0x07, 0x0e, 0x02, 0x03, b'r', b'e', b'c', 0x00, 0x00, 0x04, b's', b'p', b'i', b'n', 0x00,
        0x01, // exports
        0x0a, 0x1f, 0x02, // code: 2 bodies
        0x15, 0x00, 0x20, 0x00, 0x04, 0x40, 0x20, 0x00, 0x41, 0x01, 0x6b, 0x10, 0x00, 0x20, 0x00,
        0x41, 0x01, 0x6b, 0x10, 0x00, 0x0b, 0x0b, // rec
        0x07, 0x00, 0x03, 0x40, 0x0c, 0x00, 0x0b, 0x0b, // spin
    ];

    /// Code that never ends, by a loop or by recursion without one (2^60
    /// calls), stops when the flag is set, and says so as a trap: compiled,
    /// and on the interpreter (which a policy's instance has no other way
    /// to stop: it gets no executor stop handle).
    #[test]
    fn compiled_and_interpreted_loops_and_calls_stop_at_the_flag() {
        let dir = tempfile::tempdir().unwrap();
        let engine = crate::WasmEdgeEngine::for_tests(dir.path());
        let wasm = instrument(RUNAWAY).unwrap();
        let compiled = crate::compile::compile(&engine.config, "runaway", &wasm).unwrap();
        let compiled = crate::compile::load(&engine.config, "runaway", &compiled).unwrap();
        let interpreted = crate::compile::load(&engine.interpreter, "runaway", &wasm).unwrap();
        for (module, func, args) in [
            (&compiled, "spin", vec![]),
            (&compiled, "rec", vec![crate::raw::Val::I32(60)]),
            (&interpreted, "spin", vec![]),
            (&interpreted, "rec", vec![crate::raw::Val::I32(60)]),
        ] {
            let mut instance = crate::raw::Instance::new(
                &engine.config,
                module,
                false,
                crate::raw::Wasi::Shim,
                &[],
            )
            .unwrap();
            let stop = instance.stop_handle();
            let stopper = std::thread::spawn(move || {
                std::thread::sleep(std::time::Duration::from_millis(100));
                stop.stop();
            });
            let started = std::time::Instant::now();
            let stopped = instance.call(func, &args).unwrap_err();
            stopper.join().unwrap();
            assert!(
                stopped.message.contains("unreachable"),
                "{func}: not stopped by the flag: {stopped}"
            );
            assert!(
                started.elapsed() < std::time::Duration::from_secs(10),
                "{func}: stopped late"
            );
        }
    }

    /// A guest that could reach the flag's memory, or has none or two of
    /// its own, is refused before anything is compiled.
    #[test]
    fn guests_that_could_touch_the_flag_are_refused() {
        // (memory 1) plus a second memory: multi-memory.
        let mut two = wat_free_module();
        let memory = two
            .windows(5)
            .position(|w| w == [0x05, 0x03, 0x01, 0x00, 0x01])
            .unwrap();
        two.splice(
            memory..memory + 5,
            [0x05, 0x05, 0x02, 0x00, 0x01, 0x00, 0x01],
        );
        assert!(instrument(&two).unwrap_err().contains("not a module"));
        // No memory at all.
        let mut none = wat_free_module();
        none.splice(memory..memory + 5, []);
        assert!(
            instrument(&none)
                .unwrap_err()
                .contains("exactly one memory")
        );
        // A shared memory (threads).
        let mut shared = wat_free_module();
        shared.splice(memory..memory + 5, [0x05, 0x04, 0x01, 0x03, 0x01, 0x01]);
        assert!(instrument(&shared).unwrap_err().contains("not a module"));
    }

    /// A guest whose `cabi_realloc` bumps a pointer and logs each call (and
    /// each post-return) at 16 bytes a call from address 0.
    const LOGGING: &str = r#"(module
      (memory (export "memory") 4)
      (global $next (mut i32) (i32.const 0x10000))
      (global $log (mut i32) (i32.const 0))
      (func $note (param i32 i32 i32 i32)
        (i32.store offset=0 (global.get $log) (local.get 0))
        (i32.store offset=4 (global.get $log) (local.get 1))
        (i32.store offset=8 (global.get $log) (local.get 2))
        (i32.store offset=12 (global.get $log) (local.get 3))
        (global.set $log (i32.add (global.get $log) (i32.const 16))))
      (func (export "cabi_realloc") (param i32 i32 i32 i32) (result i32)
        (local $ptr i32)
        (call $note (local.get 0) (local.get 1) (local.get 2) (local.get 3))
        (local.set $ptr (i32.and
          (i32.add (global.get $next) (i32.sub (local.get 2) (i32.const 1)))
          (i32.sub (i32.const 0) (local.get 2))))
        (global.set $next (i32.add (local.get $ptr) (local.get 3)))
        (local.get $ptr))
      (func (export "cabi_post_f") (param i32)
        (call $note (i32.const -1) (local.get 0) (i32.const 0) (i32.const 0)))
      (func (export "calls") (result i32) (i32.div_u (global.get $log) (i32.const 16))))"#;

    /// The batch allocator makes the same `cabi_realloc` calls, in order,
    /// as the host would one by one, after a deferred post-return, and
    /// returns what each returned; a batch larger than the page goes in
    /// more than one entry.
    #[test]
    fn the_batch_allocator_makes_the_same_calls_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let engine = crate::WasmEdgeEngine::for_tests(dir.path());
        let wasm = instrument(&wat::parse_str(LOGGING).unwrap()).unwrap();
        let compiled = crate::compile::compile(&engine.config, "logging", &wasm).unwrap();
        let module = crate::compile::load(&engine.config, "logging", &compiled).unwrap();
        let mut instance =
            crate::raw::Instance::new(&engine.config, &module, false, crate::raw::Wasi::Shim, &[])
                .unwrap();
        assert!(instance.has_batch_alloc());
        assert!(instance.can_defer("cabi_post_f"));
        assert!(!instance.can_defer("cabi_post_g"));

        let requests: Vec<(u32, u32)> = (0..STAGE_PAIRS as u32 + 10)
            .map(|i| (1 << (i % 4), i % 7))
            .collect();
        let mut ptrs = Vec::new();
        instance
            .alloc_batch(Some(("cabi_post_f", 7)), &requests, &mut ptrs)
            .unwrap();
        assert_eq!(ptrs.len(), requests.len());
        // The bump allocator's answers, computed here.
        let mut next = 0x10000u32;
        for (&(align, size), &ptr) in requests.iter().zip(&ptrs) {
            let expected = next.div_ceil(align) * align;
            assert_eq!(ptr, expected);
            next = expected + size;
        }
        // The log: the post-return first, then every call as asked.
        let calls = instance.call("calls", &[]).unwrap();
        assert_eq!(calls, [crate::raw::Val::I32(requests.len() as i32 + 1)]);
        let memory = instance.memory_bytes().unwrap();
        let word = |i: usize| u32::from_le_bytes(memory[i * 4..i * 4 + 4].try_into().unwrap());
        assert_eq!([word(0), word(1)], [u32::MAX, 7]);
        for (i, &(align, size)) in requests.iter().enumerate() {
            let at = (i + 1) * 4;
            assert_eq!(
                [word(at), word(at + 1), word(at + 2), word(at + 3)],
                [0, 0, align, size],
                "call {i}"
            );
        }
        // A post-return alone is one entry of its own.
        ptrs.clear();
        instance
            .alloc_batch(Some(("cabi_post_f", 9)), &[], &mut ptrs)
            .unwrap();
        assert!(ptrs.is_empty());
        let calls = instance.call("calls", &[]).unwrap();
        assert_eq!(calls, [crate::raw::Val::I32(requests.len() as i32 + 2)]);
    }

    /// A guest may not bring its own `teller:` exports (the host would take
    /// them for its batch allocator or flag).
    #[test]
    fn a_guest_exporting_teller_names_is_refused() {
        let wasm = wat::parse_str(
            r#"(module (memory (export "memory") 1)
                 (func (export "teller:alloc") (param i32)))"#,
        )
        .unwrap();
        assert!(instrument(&wasm).unwrap_err().contains("teller:alloc"));
    }

    /// A guest that imports a WASI function teller does not grant (clocks,
    /// randomness) is refused, naming each one; the functions it grants pass.
    #[test]
    fn a_guest_importing_wasi_clocks_or_randomness_is_refused() {
        let granted = import_module(&wasi("fd_write", "(param i32 i32 i32 i32) (result i32)"));
        assert_eq!(granted_imports(&granted, &[]), Ok(()));
        let refused = import_module(&format!(
            "{}{}",
            wasi("clock_time_get", "(param i32 i64 i32) (result i32)"),
            wasi("random_get", "(param i32 i32) (result i32)")
        ));
        let error = granted_imports(&refused, &[]).unwrap_err();
        assert!(
            error.contains("WASI's clock_time_get, random_get"),
            "{error}"
        );
    }

    /// What no host provides, or provides with another signature, is named
    /// with what teller does provide: WasmEdge alone would say "unknown
    /// import" or "incompatible import type" and name nothing.
    #[test]
    fn a_guest_importing_what_teller_does_not_provide_is_told_what_it_does() {
        let state = Arc::new(HostModule {
            name: "bank:policy/state@0.2.0".into(),
            funcs: vec![crate::raw::host::HostFunc {
                name: "daily-total".into(),
                params: vec![FlatType::I32, FlatType::I32, FlatType::I32],
                results: vec![FlatType::I64],
                call: Box::new(|_, _| Ok(Vec::new())),
            }],
        });
        let hosts = [state];
        let own = r#"(import "bank:policy/state@0.2.0" "daily-total"
                        (func (param i32 i32 i32) (result i64)))"#;
        assert_eq!(granted_imports(&import_module(own), &hosts), Ok(()));

        let newer = r#"(import "bank:policy/state@0.3.0" "daily-total"
                          (func (param i32 i32 i32) (result i64)))
                       (import "env" "lookup" (func (param i32)))
                       (import "env" "table" (table 1 funcref))"#;
        let error = granted_imports(&import_module(newer), &hosts).unwrap_err();
        for named in [
            r#""bank:policy/state@0.3.0" "daily-total""#,
            r#""env" "lookup""#,
            r#""env" "table" (not a function)"#,
            "a policy may import bank:policy/state@0.2.0 (daily-total)",
            "WASI's args_get",
        ] {
            assert!(error.contains(named), "{named} not in: {error}");
        }

        let retyped = format!(
            "{}{}",
            r#"(import "bank:policy/state@0.2.0" "daily-total" (func (param i32) (result i32)))"#,
            wasi("fd_write", "(param i32 i32)")
        );
        let error = granted_imports(&import_module(&retyped), &hosts).unwrap_err();
        for named in [
            r#""bank:policy/state@0.2.0" "daily-total" as (func (param i32) (result i32)) where teller's is (func (param i32 i32 i32) (result i64))"#,
            r#""wasi_snapshot_preview1" "fd_write" as (func (param i32 i32)) where teller's is (func (param i32 i32 i32 i32) (result i32))"#,
        ] {
            assert!(error.contains(named), "{named} not in: {error}");
        }
    }

    fn import_module(imports: &str) -> Vec<u8> {
        wat::parse_str(format!(
            r#"(module {imports} (memory (export "memory") 1))"#
        ))
        .unwrap()
    }

    fn wasi(name: &str, params: &str) -> String {
        format!(r#"(import "wasi_snapshot_preview1" "{name}" (func {params}))"#)
    }

    /// The built-in guests and the Rego guest keep all their state in
    /// memory and globals, so their instances are reset rather than made
    /// anew: a toolchain that started to emit, say, `data.drop` would make
    /// every fresh WasmEdge instance 15 times dearer, and this says so.
    #[test]
    fn the_built_in_guests_and_the_rego_guest_can_be_reset() {
        use teller_policy_artifacts::{ALL, REGO};
        for guest in ALL.iter().chain([&REGO]) {
            let out = instrument(guest.module).unwrap();
            assert!(
                names(&out).iter().any(|name| name == RESET_EXPORT),
                "{} cannot be reset",
                guest.name
            );
        }
    }

    /// A `cabi_realloc` of another type gets no batch allocator.
    #[test]
    fn a_guest_without_a_canonical_realloc_gets_no_batch_allocator() {
        let wasm = wat::parse_str(
            r#"(module (memory (export "memory") 1)
                 (func (export "cabi_realloc") (param i32) (result i32) (local.get 0)))"#,
        )
        .unwrap();
        let out = instrument(&wasm).unwrap();
        assert_eq!(
            names(&out),
            ["memory", "cabi_realloc", EXPORT, RESET_EXPORT]
        );
    }

    /// The flag's memory and export go where a module's order puts them,
    /// also where that is not the order of section ids (a tag section) and
    /// where nothing follows them (a module that is only an import).
    #[test]
    fn the_flag_goes_in_its_place_around_tags_and_at_the_end() {
        for wat in [
            r#"(module (import "env" "memory" (memory 1)) (tag) (func))"#,
            r#"(module (memory 1) (tag) (func))"#,
            r#"(module (import "env" "memory" (memory 1)))"#,
        ] {
            let out = instrument(&wat::parse_str(wat).unwrap()).unwrap();
            wasmparser::Validator::new_with_features(wasmparser::WasmFeatures::all())
                .validate_all(&out)
                .unwrap_or_else(|e| panic!("{wat}: {e}"));
            let flag = exports(&out)
                .into_iter()
                .find(|(name, ..)| name == EXPORT)
                .map(|(_, kind, index)| (kind, index));
            assert_eq!(
                flag,
                Some((wasmparser::ExternalKind::Memory, 1)),
                "{wat}: the flag's memory is not exported"
            );
        }
    }

    /// `(memory 1) (func (export "f") (loop (br 0))) (func)`, by hand.
    fn wat_free_module() -> Vec<u8> {
        vec![
            0x00, 0x61, 0x73, 0x6d, 0x01, 0x00, 0x00, 0x00, // magic, version
            0x01, 0x04, 0x01, 0x60, 0x00, 0x00, // type 0: [] -> []
            0x03, 0x03, 0x02, 0x00, 0x00, // funcs 0, 1: type 0
            0x05, 0x03, 0x01, 0x00, 0x01, // memory: 1 page
            0x07, 0x05, 0x01, 0x01, b'f', 0x00, 0x00, // export "f"
            0x0a, 0x0c, 0x02, // code: 2 bodies
            0x07, 0x00, 0x03, 0x40, 0x0c, 0x00, 0x0b, 0x0b, // loop br 0 end end
            0x02, 0x00, 0x0b, // end
        ]
    }
}
