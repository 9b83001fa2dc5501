//! The deadline's stop check, put into a guest's code before WasmEdge
//! compiles it.
//!
//! WasmEdge's own "interruptible" code tests its executor's stop flag with
//! an atomic exchange (a locked instruction) at every loop and call: on
//! guests that loop over bytes (the audit sealer hashing and escaping a
//! record, the Rego interpreter) that made calls three to four times slower
//! than the same code compiled without it. Instead, teller compiles guests
//! without it and adds its own test where a guest could run on: at the
//! start of every function and of every loop, an atomic load (a plain
//! `mov` on x86, which the compiler may not hoist out of a loop) of a flag
//! in a one-page memory of its own, exported as [`EXPORT`]; a set flag
//! traps (`unreachable`). The watchdog sets it at the deadline.

use wasm_encoder::reencode::{Error as ReencodeError, Reencode, utils};
use wasm_encoder::{
    BlockType, CodeSection, ExportKind, Instruction, MemArg, MemArgTarget, MemoryType,
};

/// The memory holding the stop flag (at offset 0), as the guest exports it.
pub(crate) const EXPORT: &str = "teller:stop";

/// What changes in the compiled code when this file's output does: part
/// of the cache key.
pub(crate) const VERSION: &str = "stopflag1";

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
    };
    let mut module = wasm_encoder::Module::new();
    let parser = wasmparser::Parser::new(0);
    checks
        .parse_core_module(&mut module, parser, wasm)
        .map_err(|e| format!("cannot add the deadline's checks: {e}"))?;
    Ok(module.finish())
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

struct StopChecks {
    /// The flag's memory index.
    flag: u32,
    memory_section_seen: bool,
    export_section_seen: bool,
}

impl StopChecks {
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
        // without exports an export section, each in its place.
        let between = |id: wasm_encoder::SectionId| {
            after.is_none_or(|a| (a as u8) < id as u8)
                && before.is_some_and(|b| (b as u8) > id as u8)
        };
        if !self.memory_section_seen && between(wasm_encoder::SectionId::Memory) {
            let mut memories = wasm_encoder::MemorySection::new();
            memories.memory(Self::flag_memory());
            module.section(&memories);
            self.memory_section_seen = true;
        }
        if !self.export_section_seen && between(wasm_encoder::SectionId::Export) {
            let mut exports = wasm_encoder::ExportSection::new();
            exports.export(EXPORT, ExportKind::Memory, self.flag);
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
        exports.export(EXPORT, ExportKind::Memory, self.flag);
        self.export_section_seen = true;
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
        let mut exported = false;
        for payload in wasmparser::Parser::new(0).parse_all(&out) {
            match payload.unwrap() {
                wasmparser::Payload::CodeSectionEntry(body) => {
                    for op in body.get_operators_reader().unwrap() {
                        if let wasmparser::Operator::I32AtomicLoad { memarg } = op.unwrap() {
                            assert_eq!(memarg.target, wasmparser::MemArgTarget::Memory(1));
                            loads += 1;
                        }
                    }
                }
                wasmparser::Payload::ExportSection(exports) => {
                    for e in exports {
                        let e = e.unwrap();
                        exported |= e.name == EXPORT
                            && e.kind == wasmparser::ExternalKind::Memory
                            && e.index == 1;
                    }
                }
                _ => {}
            }
        }
        // Two function entries and one loop.
        assert_eq!(loads, 3);
        assert!(exported);
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

    /// Compiled code that never ends, by a loop or by recursion without
    /// one (2^60 calls), stops when the flag is set, and says so as a trap.
    #[test]
    fn compiled_loops_and_calls_stop_at_the_flag() {
        let dir = tempfile::tempdir().unwrap();
        let engine = crate::WasmEdgeEngine::new(
            teller_engine::cache::ArtifactCache::at(dir.path()).unwrap(),
            teller_engine::GuestLimits::default(),
            teller_engine::state::GuestState::none(),
        )
        .unwrap();
        let wasm = instrument(RUNAWAY).unwrap();
        let compiled = crate::compile::compile(&engine.config, "runaway", &wasm).unwrap();
        let module = crate::compile::load(&engine.config, "runaway", &compiled).unwrap();
        for (func, args) in [("spin", vec![]), ("rec", vec![crate::raw::Val::I32(60)])] {
            let mut instance = crate::raw::Instance::new(
                &engine.config,
                &module,
                false,
                crate::raw::Wasi::Shim,
                None,
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
