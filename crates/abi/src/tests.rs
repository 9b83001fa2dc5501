//! The canonical ABI against a memory the test controls: every WIT type
//! round-trips through lowering and lifting, and hostile memory contents
//! are refused with an error, never a panic.

use super::lift::Lifter;
use super::lower::Lowerer;
use super::{AbiError, Contract, Flat, Value, VecMemory};

const WIT: &str = r#"
package test:abi@0.1.0;

interface all {
    flags perms { read, write, exec }
    enum color { red, green, blue }
    variant shape { none, circle(f32), rect(tuple<u32, u32>), named(string), big(u64), tiny(u8), real(f64) }
    record everything {
        b: bool, a: u8, c: s8, d: u16, e: s16, f: u32, g: s32, h: u64, i: s64,
        j: f32, k: f64, l: char, m: string, n: list<u16>, o: option<string>,
        p: result<u32, string>, q: color, r: perms, s: shape, t: tuple<u8, string>,
        u: list<shape>, v: result, w: option<option<u8>>, x: list<list<string>>,
    }
    roundtrip: func(e: everything) -> everything;
    flat: func(s: shape, o: option<string>, r: result<u32, string>, w: option<option<u8>>, c: color, p: perms) -> shape;
    many: func(a: u64, b: u64, c: u64, d: u64, e: u64, f: u64, g: u64, h: u64, i: u64,
               j: u64, k: u64, l: u64, m: u64, n: u64, o: u64, p: u64, q: u64) -> u64;
    text: func(s: string) -> string;
    colors: func(c: list<color>) -> list<color>;
}

world test { export all; }
"#;

fn contract() -> Contract {
    Contract::parse("test.wit", WIT).unwrap()
}

fn some(v: Value) -> Option<Box<Value>> {
    Some(Box::new(v))
}

fn everything(i: u32) -> Value {
    let s = |t: &str| Value::String(t.to_string());
    Value::Record(vec![
        Value::Bool(i.is_multiple_of(2)),
        Value::U8(255),
        Value::S8(-128),
        Value::U16(65535),
        Value::S16(-32768),
        Value::U32(u32::MAX - i),
        Value::S32(i32::MIN),
        Value::U64(u64::MAX),
        Value::S64(i64::MIN + i as i64),
        Value::F32(f32::from_bits(0x7fc0_0001)), // a NaN with a payload
        Value::F64(-0.0),
        Value::Char('🦀'),
        s("héllo, 世界"),
        Value::List(
            (0..i as u16)
                .collect::<Vec<_>>()
                .into_iter()
                .map(Value::U16)
                .collect(),
        ),
        Value::Option(if i.is_multiple_of(2) {
            some(s("yes"))
        } else {
            None
        }),
        Value::Result(if i.is_multiple_of(2) {
            Ok(some(Value::U32(7)))
        } else {
            Err(some(s("no")))
        }),
        Value::Enum(i % 3),
        Value::Flags(i & 0b111),
        Value::Variant(
            i % 7,
            match i % 7 {
                0 => None,
                1 => some(Value::F32(1.5)),
                2 => some(Value::Tuple(vec![Value::U32(3), Value::U32(4)])),
                3 => some(s("")),
                4 => some(Value::U64(1 << 40)),
                5 => some(Value::U8(9)),
                _ => some(Value::F64(f64::MAX)),
            },
        ),
        Value::Tuple(vec![Value::U8(1), s("t")]),
        Value::List(vec![
            Value::Variant(3, some(s("in a list"))),
            Value::Variant(0, None),
            Value::Variant(6, some(Value::F64(2.5))),
        ]),
        Value::Result(Ok(None)),
        Value::Option(some(Value::Option(if i.is_multiple_of(2) {
            None
        } else {
            some(Value::U8(0))
        }))),
        Value::List(vec![Value::List(vec![s("a"), s("")]), Value::List(vec![])]),
    ])
}

/// Values compare by bits (NaN payloads included).
fn same(a: &Value, b: &Value) -> bool {
    format!("{a:?}") == format!("{b:?}")
        && match (a, b) {
            (Value::F32(x), Value::F32(y)) => x.to_bits() == y.to_bits(),
            (Value::F64(x), Value::F64(y)) => x.to_bits() == y.to_bits(),
            _ => true,
        }
}

/// Lowers `args` as `func`'s parameters, then lifts them back as the
/// guest would see them.
fn roundtrip(func: &str, args: Vec<Value>) -> Vec<Value> {
    let c = contract();
    let f = c.export("all", func).unwrap();
    let mut guest = VecMemory::new();
    let flat = Lowerer::new(&c, &mut guest).params(&f, &args).unwrap();
    assert_eq!(
        flat.iter().map(Flat::ty).collect::<Vec<_>>(),
        f.core_params,
        "core signature of {func}"
    );
    lift_params(&c, &f, &flat, &guest.bytes)
}

/// What a guest receives: the parameters, flat or spilled to memory as a
/// tuple.
fn lift_params(c: &Contract, f: &super::ExportFunc, flat: &[Flat], memory: &[u8]) -> Vec<Value> {
    Lifter::new(c, memory).params(f, flat).unwrap()
}

#[test]
fn every_type_roundtrips_through_memory() {
    for i in 0..14 {
        let v = everything(i);
        let back = roundtrip("roundtrip", vec![v.clone()]);
        assert!(same(&back[0], &v), "{i}: {back:?} != {v:?}");
    }
}

#[test]
fn variants_roundtrip_flat_with_joined_payloads() {
    let c = contract();
    let f = c.export("all", "flat").unwrap();
    assert!(!f.params_indirect);
    for case in 0..7u32 {
        let payload = match case {
            0 => None,
            1 => some(Value::F32(-3.25)),
            2 => some(Value::Tuple(vec![Value::U32(u32::MAX), Value::U32(1)])),
            3 => some(Value::String("σ".into())),
            4 => some(Value::U64(u64::MAX)),
            5 => some(Value::U8(200)),
            _ => some(Value::F64(1e300)),
        };
        let args = vec![
            Value::Variant(case, payload),
            Value::Option(some(Value::String("x".into()))),
            Value::Result(Err(some(Value::String("bad".into())))),
            Value::Option(some(Value::Option(some(Value::U8(5))))),
            Value::Enum(2),
            Value::Flags(0b101),
        ];
        let back = roundtrip("flat", args.clone());
        for (a, b) in args.iter().zip(&back) {
            assert!(same(a, b), "case {case}: {b:?} != {a:?}");
        }
    }
}

#[test]
fn more_than_sixteen_flat_parameters_go_through_memory() {
    let c = contract();
    let many = c.export("all", "many").unwrap();
    assert!(many.params_indirect);
    let args: Vec<Value> = (0..17).map(|i| Value::U64(i * 1_000_000_007)).collect();
    let mut guest = VecMemory::new();
    let flat = Lowerer::new(&c, &mut guest).params(&many, &args).unwrap();
    let [Flat::I32(ptr)] = flat[..] else {
        panic!("{flat:?}")
    };
    assert_eq!(ptr % 8, 0, "u64 tuple must be 8-aligned");
    let mut lifter = Lifter::new(&c, &guest.bytes);
    for (i, ty) in many.params.iter().enumerate() {
        let v = lifter.load(ty, ptr as usize + 8 * i).unwrap();
        assert_eq!(v, args[i]);
    }
}

#[test]
fn results_come_back_flat_or_through_a_pointer() {
    let c = contract();
    let text = c.export("all", "text").unwrap();
    assert!(
        text.result_indirect,
        "a string result is two values: indirect"
    );
    let mut memory = vec![0u8; 64];
    memory[8..12].copy_from_slice(&32u32.to_le_bytes());
    memory[12..16].copy_from_slice(&5u32.to_le_bytes());
    memory[32..37].copy_from_slice(b"hello");
    let v = Lifter::new(&c, &memory)
        .results(&text, &[Flat::I32(8)])
        .unwrap();
    assert_eq!(v, Some(Value::String("hello".into())));
    // Misaligned and out-of-bounds result pointers.
    assert!(
        Lifter::new(&c, &memory)
            .results(&text, &[Flat::I32(9)])
            .is_err()
    );
    assert!(
        Lifter::new(&c, &memory)
            .results(&text, &[Flat::I32(60)])
            .is_err()
    );
    assert!(
        Lifter::new(&c, &memory)
            .results(&text, &[Flat::I64(8)])
            .is_err()
    );
    assert!(Lifter::new(&c, &memory).results(&text, &[]).is_err());

    let many = c.export("all", "many").unwrap();
    assert!(!many.result_indirect);
    let v = Lifter::new(&c, &memory)
        .results(&many, &[Flat::I64(-1)])
        .unwrap();
    assert_eq!(v, Some(Value::U64(u64::MAX)));
}

/// A hostile guest's result, laid out by hand at `ptr` in `memory`.
fn lift_text(memory: &[u8]) -> Result<Option<Value>, AbiError> {
    let c = contract();
    let f = c.export("all", "text").unwrap();
    Lifter::new(&c, memory).results(&f, &[Flat::I32(0)])
}

fn string_at(ptr: u32, len: u32, tail: &[u8]) -> Vec<u8> {
    let mut m = Vec::new();
    m.extend_from_slice(&ptr.to_le_bytes());
    m.extend_from_slice(&len.to_le_bytes());
    m.extend_from_slice(tail);
    m
}

#[test]
fn hostile_strings_are_refused() {
    assert!(lift_text(&string_at(8, 2, b"ok")).is_ok());
    for (memory, why) in [
        (string_at(8, 3, b"ok"), "one byte past the end"),
        (string_at(u32::MAX, 1, b""), "pointer past the end"),
        (string_at(8, u32::MAX, b"ok"), "length past the end"),
        (string_at(u32::MAX - 1, 4, b""), "pointer + length overflow"),
        (string_at(8, 2, &[0xc3, 0x28]), "invalid UTF-8"),
        (string_at(8, 3, &[0xed, 0xa0, 0x80]), "UTF-8 surrogate"),
        (vec![0, 0, 0], "the result pointer itself out of bounds"),
    ] {
        let e = lift_text(&memory).expect_err(why);
        assert!(!e.0.is_empty(), "{why}");
    }
}

#[test]
fn hostile_discriminants_chars_flags_and_lists_are_refused() {
    let c = contract();
    let f = c.export("all", "flat").unwrap();
    let shape = &f.params[0];
    let color = &f.params[4];
    let perms = &f.params[5];
    let option = &f.params[1];
    let result = &f.params[2];
    let load = |ty, bytes: &[u8]| Lifter::new(&c, bytes).load(ty, 0);
    assert_eq!(load(color, &[2]).unwrap(), Value::Enum(2));
    assert!(load(color, &[3]).is_err(), "enum case 3 of 3");
    assert!(load(shape, &[7, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]).is_err());
    assert!(load(option, &[2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]).is_err());
    assert!(load(result, &[2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]).is_err());
    assert_eq!(load(perms, &[0b111]).unwrap(), Value::Flags(0b111));
    assert!(
        load(perms, &[0b1000]).is_err(),
        "flag bit beyond the labels"
    );

    let roundtrip_ty = &c.export("all", "roundtrip").unwrap().params[0];
    let everything = match c.kind(roundtrip_ty).unwrap() {
        super::Kind::Def(wit_parser::TypeDefKind::Record(r)) => r.clone(),
        _ => panic!(),
    };
    let ty_of = |name: &str| {
        everything
            .fields
            .iter()
            .find(|f| f.name == name)
            .unwrap()
            .ty
    };
    let char_ty = ty_of("l");
    for bad in [0xd800u32, 0xdfff, 0x110000, u32::MAX] {
        assert!(load(&char_ty, &bad.to_le_bytes()).is_err(), "char {bad:#x}");
    }
    assert_eq!(
        load(&char_ty, &0x1f980u32.to_le_bytes()).unwrap(),
        Value::Char('🦀')
    );

    // list<u16>: misaligned, and a length whose byte size overflows.
    let list_ty = ty_of("n");
    let mut m = string_at(9, 1, &[0; 8]);
    assert!(load(&list_ty, &m).is_err(), "misaligned list");
    m = string_at(8, u32::MAX, &[0; 8]);
    assert!(load(&list_ty, &m).is_err(), "list past the end");
    m = string_at(8, 2, &[1, 0, 2, 0]);
    assert_eq!(
        load(&list_ty, &m).unwrap(),
        Value::List(vec![Value::U16(1), Value::U16(2)])
    );
}

#[test]
fn flat_results_of_the_wrong_core_type_are_refused() {
    let c = contract();
    let f = c.export("all", "many").unwrap();
    for flat in [
        vec![Flat::I32(1)],
        vec![Flat::F64(1.0)],
        vec![],
        vec![Flat::I64(1), Flat::I64(2)],
    ] {
        assert!(Lifter::new(&c, &[]).results(&f, &flat).is_err(), "{flat:?}");
    }
}

#[test]
fn values_that_do_not_match_their_type_are_refused_when_lowering() {
    let c = contract();
    let f = c.export("all", "text").unwrap();
    let mut guest = VecMemory::new();
    let mut lower = Lowerer::new(&c, &mut guest);
    assert!(lower.params(&f, &[Value::U8(1)]).is_err());
    assert!(lower.params(&f, &[]).is_err());
    let colors = c.export("all", "colors").unwrap();
    assert!(
        lower
            .params(&colors, &[Value::List(vec![Value::Enum(3)])])
            .is_err()
    );
}

/// A guest allocator that notes each allocation it is asked for.
#[derive(Default)]
struct Recording {
    memory: VecMemory,
    requests: Vec<(u32, u32)>,
}

impl super::lower::GuestAlloc for Recording {
    fn realloc(&mut self, old: u32, old_size: u32, align: u32, size: u32) -> Result<u32, AbiError> {
        self.requests.push((align, size));
        self.memory.realloc(old, old_size, align, size)
    }

    fn write(&mut self, ptr: u32, bytes: &[u8]) -> Result<(), AbiError> {
        self.memory.write(ptr, bytes)
    }
}

#[test]
fn planned_allocations_are_the_ones_lowering_makes() {
    use super::lower::allocations;
    let c = contract();
    let mut calls: Vec<(&str, Vec<Value>)> = (0..14)
        .map(|i| ("roundtrip", vec![everything(i)]))
        .collect();
    calls.push(("text", vec![Value::String(String::new())]));
    calls.push(("text", vec![Value::String("σ".repeat(300))]));
    calls.push(("colors", vec![Value::List(vec![Value::Enum(1); 5])]));
    calls.push(("many", (0..17).map(Value::U64).collect()));
    calls.push((
        "flat",
        vec![
            Value::Variant(3, some(Value::String("named".into()))),
            Value::Option(None),
            Value::Result(Err(some(Value::String("bad".into())))),
            Value::Option(some(Value::Option(None))),
            Value::Enum(0),
            Value::Flags(0),
        ],
    ));
    for (name, args) in calls {
        let f = c.export("all", name).unwrap();
        let mut made = Recording::default();
        Lowerer::new(&c, &mut made).params(&f, &args).unwrap();
        assert_eq!(allocations(&c, &f, &args).unwrap(), made.requests, "{name}");
    }
    let many = c.export("all", "many").unwrap();
    assert_eq!(
        allocations(&c, &many, &(0..17).map(Value::U64).collect::<Vec<_>>()).unwrap(),
        vec![(8, 17 * 8)],
        "the spilled parameters are the one allocation"
    );
    let text = c.export("all", "text").unwrap();
    assert!(allocations(&c, &text, &[Value::U8(1)]).is_err());
    assert!(allocations(&c, &text, &[]).is_err());
    let colors = c.export("all", "colors").unwrap();
    assert!(allocations(&c, &colors, &[Value::String("red".into())]).is_err());
}

#[test]
fn typed_values_cross_the_serde_bridge() {
    use teller_contract::{PolicyConfig, TransferRequest, User};
    let c = Contract::bank_policy().unwrap();
    let check = c.export("transfer-check", "check").unwrap();
    let request = TransferRequest {
        action: "transfer".into(),
        amount: u64::MAX,
        currency: None,
        from_account: Some("6222 0202".into()),
        to_account: Some(String::new()),
        user: User {
            id: Some("ü".into()),
            role: "authorized".into(),
        },
        audit_enabled: Some(true),
        approval_required: None,
        request_id: Some("r".repeat(1000)),
    };
    let config = PolicyConfig {
        amount_limit: 5,
        authorized_roles: vec!["a".into(), "b".into()],
        daily_limit: Some(7),
        day_offset_minutes: -330,
    };
    let args = vec![
        super::bridge::to_value(&c, &check.params[0], &config).unwrap(),
        super::bridge::to_value(&c, &check.params[1], &request).unwrap(),
    ];
    let mut guest = VecMemory::new();
    let flat = Lowerer::new(&c, &mut guest).params(&check, &args).unwrap();
    assert!(check.params_indirect, "check's 27 flat parameters spill");
    let back = lift_params(&c, &check, &flat, &guest.bytes);
    let config2: PolicyConfig =
        super::bridge::from_value(&c, &check.params[0], back[0].clone()).unwrap();
    let request2: TransferRequest =
        super::bridge::from_value(&c, &check.params[1], back[1].clone()).unwrap();
    assert_eq!(
        serde_json::to_string(&(config, request)).unwrap(),
        serde_json::to_string(&(config2, request2)).unwrap()
    );
}

#[test]
fn state_imports_lift_their_arguments_and_lower_their_results() {
    use super::lower::{Lowered, NoAlloc};
    use teller_contract::{DailyReservation, Reservation};
    let c = Contract::bank_policy().unwrap();
    let reserve = c.import("state", "reserve").unwrap();
    assert_eq!(reserve.module, "bank:policy/state@0.2.0");
    assert_eq!(reserve.name, "reserve");
    // key (2), amount, limit, offset, option<string> (3), then the return
    // pointer: the record result (bool, u64) does not fit one flat value.
    use super::FlatType::{I32, I64};
    assert_eq!(
        reserve.core_params,
        [I32, I32, I64, I64, I32, I32, I32, I32, I32]
    );
    assert!(reserve.core_results.is_empty());
    let r = DailyReservation {
        key: "ACC-1".into(),
        amount: 300,
        limit: 1_000,
        day_offset_minutes: 480,
        request_id: Some("req".into()),
    };
    let mut guest = VecMemory::new();
    let arg = super::bridge::to_value(&c, &reserve.func.params[0], &r).unwrap();
    let flat = Lowerer::new(&c, &mut guest)
        .params(&reserve.func, &[arg])
        .unwrap();
    let back = Lifter::new(&c, &guest.bytes)
        .params(&reserve.func, &flat)
        .unwrap();
    let r2: DailyReservation =
        super::bridge::from_value(&c, &reserve.func.params[0], back[0].clone()).unwrap();
    assert_eq!(r, r2);
    // A key pointing outside memory is refused, not read.
    let mut bad = flat.clone();
    bad[0] = Flat::I32(i32::MAX);
    assert!(
        Lifter::new(&c, &guest.bytes)
            .params(&reserve.func, &bad)
            .is_err()
    );

    let answer = Reservation {
        granted: true,
        total: 0x0102_0304_0506_0708,
    };
    let ty = reserve.func.result.unwrap();
    let value = super::bridge::to_value(&c, &ty, &answer).unwrap();
    let Lowered::Memory { bytes, align } = Lowerer::new(&c, &mut NoAlloc)
        .result(&reserve.func, &value)
        .unwrap()
    else {
        panic!("reserve's result goes through memory")
    };
    assert_eq!((bytes.len(), align), (16, 8));
    assert_eq!(bytes[0], 1);
    assert_eq!(bytes[8..], 0x0102_0304_0506_0708u64.to_le_bytes());

    let total = c.import("state", "daily-total").unwrap();
    assert_eq!(total.core_params, [I32, I32, I32]);
    assert_eq!(total.core_results, [I64]);
    let value = Value::U64(42);
    assert_eq!(
        Lowerer::new(&c, &mut NoAlloc)
            .result(&total.func, &value)
            .unwrap(),
        Lowered::Flat(vec![Flat::I64(42)])
    );
}

/// A Rust type whose field names are not the WIT record's, in name or in
/// order, is refused both ways, never read into the wrong field.
#[test]
fn a_type_that_drifts_from_the_wit_is_refused() {
    #[derive(Debug, serde::Serialize, serde::Deserialize)]
    struct Renamed {
        amount_limit: u64,
        authorised_roles: Vec<String>,
        daily_limit: Option<u64>,
        day_offset_minutes: i32,
    }
    #[derive(Debug, serde::Serialize, serde::Deserialize)]
    struct Reordered {
        authorized_roles: Vec<String>,
        amount_limit: u64,
        daily_limit: Option<u64>,
        day_offset_minutes: i32,
    }
    let c = Contract::bank_policy().unwrap();
    let check = c.export("transfer-check", "check").unwrap();
    let ty = &check.params[0];
    let renamed = Renamed {
        amount_limit: 1,
        authorised_roles: vec![],
        daily_limit: None,
        day_offset_minutes: 0,
    };
    let e = super::bridge::to_value(&c, ty, &renamed).unwrap_err();
    assert!(e.0.contains("Rust field 1 is \"authorised_roles\""), "{e}");
    let reordered = Reordered {
        authorized_roles: vec![],
        amount_limit: 1,
        daily_limit: None,
        day_offset_minutes: 0,
    };
    let e = super::bridge::to_value(&c, ty, &reordered).unwrap_err();
    assert!(e.0.contains("Rust field 0 is \"authorized_roles\""), "{e}");
    let config = teller_contract::PolicyConfig {
        amount_limit: 1,
        authorized_roles: vec!["a".into()],
        daily_limit: Some(2),
        day_offset_minutes: 3,
    };
    let value = super::bridge::to_value(&c, ty, &config).unwrap();
    let e = super::bridge::from_value::<Renamed>(&c, ty, value.clone()).unwrap_err();
    assert!(e.0.contains("authorised_roles"), "{e}");
    let e = super::bridge::from_value::<Reordered>(&c, ty, value).unwrap_err();
    assert!(e.0.contains("authorized_roles"), "{e}");
}
