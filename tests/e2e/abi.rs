//! The host-side canonical ABI against a real wit-bindgen guest whose WIT
//! uses every type: each function of `tests/guests/abi-echo` is called with
//! values generated from its WIT signature, on wasmtime (the component,
//! wasmtime's own ABI) and on WasmEdge (the core module, teller's ABI);
//! results must agree.

use crate::support::cache_dir;
use proptest::prelude::*;
use proptest::strategy::Union;
use std::sync::Arc;
use teller_abi::{Contract, Kind, Value};
use teller_engine::cache::ArtifactCache;
use teller_policy_artifacts::ABI_ECHO;
use teller_wasmedge::WasmEdgeEngine;
use wasmtime::component::{Component, Linker, ResourceTable, Val};
use wit_parser::{Type, TypeDefKind};

const WIT: &str = include_str!("../guests/abi-echo/wit/abi.wit");
const INTERFACE: &str = "test:abi/all@0.1.0";

fn contract() -> Contract {
    Contract::parse("abi.wit", WIT).unwrap()
}

/// Values of any WIT type, generated from the type itself.
fn arb(c: &Contract, ty: &Type) -> BoxedStrategy<Value> {
    match c.kind(ty).unwrap() {
        Kind::Prim(p) => match p {
            Type::Bool => any::<bool>().prop_map(Value::Bool).boxed(),
            Type::U8 => any::<u8>().prop_map(Value::U8).boxed(),
            Type::S8 => any::<i8>().prop_map(Value::S8).boxed(),
            Type::U16 => any::<u16>().prop_map(Value::U16).boxed(),
            Type::S16 => any::<i16>().prop_map(Value::S16).boxed(),
            Type::U32 => any::<u32>().prop_map(Value::U32).boxed(),
            Type::S32 => any::<i32>().prop_map(Value::S32).boxed(),
            Type::U64 => any::<u64>().prop_map(Value::U64).boxed(),
            Type::S64 => any::<i64>().prop_map(Value::S64).boxed(),
            Type::F32 => any::<u32>()
                .prop_map(|b| Value::F32(f32::from_bits(b)))
                .boxed(),
            Type::F64 => any::<u64>()
                .prop_map(|b| Value::F64(f64::from_bits(b)))
                .boxed(),
            Type::Char => any::<char>().prop_map(Value::Char).boxed(),
            Type::String => prop_oneof!["\\PC{0,12}", ".{0,3}", "[😀-🙏]{0,3}"]
                .prop_map(Value::String)
                .boxed(),
            other => panic!("{other:?}"),
        },
        Kind::Def(def) => match def {
            TypeDefKind::Record(r) => {
                let fields: Vec<_> = r.fields.iter().map(|f| arb(c, &f.ty)).collect();
                fields.prop_map(Value::Record).boxed()
            }
            TypeDefKind::Tuple(t) => {
                let items: Vec<_> = t.types.iter().map(|ty| arb(c, ty)).collect();
                items.prop_map(Value::Tuple).boxed()
            }
            TypeDefKind::List(elem) => prop::collection::vec(arb(c, elem), 0..4)
                .prop_map(Value::List)
                .boxed(),
            TypeDefKind::Flags(f) => (0..1u32 << f.flags.len()).prop_map(Value::Flags).boxed(),
            TypeDefKind::Enum(e) => (0..e.cases.len() as u32).prop_map(Value::Enum).boxed(),
            other => {
                let cases = c.cases(other).unwrap();
                let kind = other_kind(other);
                let make = move |i: u32, p: Option<Value>| {
                    let p = p.map(Box::new);
                    match (kind, i) {
                        ("option", _) => Value::Option(p),
                        ("result", 0) => Value::Result(Ok(p)),
                        ("result", _) => Value::Result(Err(p)),
                        _ => Value::Variant(i, p),
                    }
                };
                let arms: Vec<BoxedStrategy<Value>> = cases
                    .iter()
                    .enumerate()
                    .map(|(i, ty)| match ty {
                        Some(ty) => arb(c, ty)
                            .prop_map(move |v| make(i as u32, Some(v)))
                            .boxed(),
                        None => Just(make(i as u32, None)).boxed(),
                    })
                    .collect();
                Union::new(arms).boxed()
            }
        },
    }
}

fn other_kind(def: &TypeDefKind) -> &'static str {
    match def {
        TypeDefKind::Option(_) => "option",
        TypeDefKind::Result(_) => "result",
        _ => "variant",
    }
}

/// A [`Value`] as wasmtime's dynamic [`Val`], names taken from the WIT.
fn to_val(c: &Contract, ty: &Type, v: &Value) -> Val {
    let def = match c.kind(ty).unwrap() {
        Kind::Def(def) => Some(def),
        Kind::Prim(_) => None,
    };
    match (v, def) {
        (Value::Bool(x), _) => Val::Bool(*x),
        (Value::U8(x), _) => Val::U8(*x),
        (Value::S8(x), _) => Val::S8(*x),
        (Value::U16(x), _) => Val::U16(*x),
        (Value::S16(x), _) => Val::S16(*x),
        (Value::U32(x), _) => Val::U32(*x),
        (Value::S32(x), _) => Val::S32(*x),
        (Value::U64(x), _) => Val::U64(*x),
        (Value::S64(x), _) => Val::S64(*x),
        (Value::F32(x), _) => Val::Float32(*x),
        (Value::F64(x), _) => Val::Float64(*x),
        (Value::Char(x), _) => Val::Char(*x),
        (Value::String(x), _) => Val::String(x.clone()),
        (Value::List(items), Some(TypeDefKind::List(elem))) => {
            Val::List(items.iter().map(|v| to_val(c, elem, v)).collect())
        }
        (Value::Record(fields), Some(TypeDefKind::Record(r))) => Val::Record(
            r.fields
                .iter()
                .zip(fields)
                .map(|(f, v)| (f.name.clone(), to_val(c, &f.ty, v)))
                .collect(),
        ),
        (Value::Tuple(items), Some(TypeDefKind::Tuple(t))) => Val::Tuple(
            t.types
                .iter()
                .zip(items)
                .map(|(ty, v)| to_val(c, ty, v))
                .collect(),
        ),
        (Value::Flags(bits), Some(TypeDefKind::Flags(f))) => Val::Flags(
            f.flags
                .iter()
                .enumerate()
                .filter(|(i, _)| bits & (1 << i) != 0)
                .map(|(_, flag)| flag.name.clone())
                .collect(),
        ),
        (Value::Enum(i), Some(TypeDefKind::Enum(e))) => {
            Val::Enum(e.cases[*i as usize].name.clone())
        }
        (Value::Variant(i, p), Some(TypeDefKind::Variant(var))) => {
            let case = &var.cases[*i as usize];
            Val::Variant(
                case.name.clone(),
                p.as_ref()
                    .map(|p| Box::new(to_val(c, case.ty.as_ref().unwrap(), p))),
            )
        }
        (Value::Option(p), Some(TypeDefKind::Option(inner))) => {
            Val::Option(p.as_ref().map(|p| Box::new(to_val(c, inner, p))))
        }
        (Value::Result(r), Some(TypeDefKind::Result(res))) => Val::Result(match r {
            Ok(p) => Ok(p
                .as_ref()
                .map(|p| Box::new(to_val(c, res.ok.as_ref().unwrap(), p)))),
            Err(p) => Err(p
                .as_ref()
                .map(|p| Box::new(to_val(c, res.err.as_ref().unwrap(), p)))),
        }),
        (v, _) => panic!("{v:?} does not fit {ty:?}"),
    }
}

struct State {
    wasi: wasmtime_wasi::WasiCtx,
    table: ResourceTable,
}

impl wasmtime_wasi::WasiView for State {
    fn ctx(&mut self) -> wasmtime_wasi::WasiCtxView<'_> {
        wasmtime_wasi::WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

/// Values compare by their rendering: every NaN is alike (an engine may
/// canonicalize NaN payloads), -0.0 and 0.0 are not.
fn render(v: &Value) -> String {
    format!("{v:?}")
}

#[test]
fn every_function_agrees_on_both_engines() {
    let c = Arc::new(contract());
    let functions: Vec<String> = c
        .world_exports("abi-echo")
        .unwrap()
        .into_iter()
        .filter(|(interface, _)| interface == "all")
        .map(|(_, f)| f)
        .collect();
    assert_eq!(functions.len(), 9, "{functions:?}");

    let wasmedge = WasmEdgeEngine::new(
        ArtifactCache::at(cache_dir()).unwrap(),
        Default::default(),
        teller_engine::state::GuestState::none(),
    )
    .unwrap()
    .load_values(ABI_ECHO.module, c.clone())
    .unwrap();

    let engine = wasmtime::Engine::default();
    let component = Component::new(&engine, ABI_ECHO.component).unwrap();
    let mut linker = Linker::new(&engine);
    wasmtime_wasi::p2::add_to_linker_sync(&mut linker).unwrap();
    let store = std::cell::RefCell::new(wasmtime::Store::new(
        &engine,
        State {
            wasi: wasmtime_wasi::WasiCtx::builder().build(),
            table: ResourceTable::new(),
        },
    ));
    let (instance, iface) = {
        let mut s = store.borrow_mut();
        let instance = linker.instantiate(&mut *s, &component).unwrap();
        let iface = instance.get_export_index(&mut *s, None, INTERFACE).unwrap();
        (instance, iface)
    };

    for name in &functions {
        let func = c.export("all", name).unwrap();
        let wasmtime_func = {
            let mut s = store.borrow_mut();
            let index = instance
                .get_export_index(&mut *s, Some(&iface), name)
                .unwrap();
            instance.get_func(&mut *s, index).unwrap()
        };
        let args: Vec<BoxedStrategy<Value>> = func.params.iter().map(|ty| arb(&c, ty)).collect();
        let result_ty = func.result.unwrap();
        let mut runner = proptest::test_runner::TestRunner::new(ProptestConfig::with_cases(200));
        runner
            .run(&args, |args| {
                let vals: Vec<Val> = func
                    .params
                    .iter()
                    .zip(&args)
                    .map(|(ty, v)| to_val(&c, ty, v))
                    .collect();
                let mut out = [Val::Bool(false)];
                wasmtime_func
                    .call(&mut *store.borrow_mut(), &vals, &mut out)
                    .unwrap();
                let got = wasmedge.call(&func, &args).unwrap().unwrap();
                prop_assert_eq!(
                    format!("{:?}", out[0]),
                    format!("{:?}", to_val(&c, &result_ty, &got)),
                    "{} {}",
                    name,
                    args.iter().map(render).collect::<Vec<_>>().join(", ")
                );
                Ok(())
            })
            .unwrap_or_else(|e| panic!("{name}: {e}"));
    }
}

/// WasmEdge instances are pooled and reused, but one whose call failed is
/// dropped: the guest's call counter shows which instance answered.
#[test]
fn a_trapped_wasmedge_instance_is_never_reused() {
    let c = Arc::new(contract());
    let guest = WasmEdgeEngine::new(
        ArtifactCache::at(cache_dir()).unwrap(),
        Default::default(),
        teller_engine::state::GuestState::none(),
    )
    .unwrap()
    .load_values(ABI_ECHO.module, c.clone())
    .unwrap();
    let count = c.export("misbehave", "count").unwrap();
    let boom = c.export("misbehave", "boom").unwrap();
    let counts = |n| -> Vec<Value> {
        (0..n)
            .map(|_| guest.call(&count, &[]).unwrap().unwrap())
            .collect()
    };
    assert_eq!(
        counts(3),
        [Value::U32(1), Value::U32(2), Value::U32(3)],
        "reused"
    );
    let e = guest.call(&boom, &[]).unwrap_err();
    assert_eq!(e.code, "guest_trap", "{e}");
    assert_eq!(
        counts(2),
        [Value::U32(1), Value::U32(2)],
        "a fresh instance after the trap"
    );
}
