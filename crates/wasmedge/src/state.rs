//! `bank:policy/state` and `bank:policy/digest` for core modules: host
//! functions under the canonical ABI in the import direction, driven by the
//! WIT like the exports. The guest's arguments are lifted from its memory
//! with every pointer and length checked, the answer is lowered into the
//! return area it points to.

use crate::bad_output;
use crate::raw::Val;
use crate::raw::host::{Caller, HostFunc, HostModule};
use std::sync::Arc;
use teller_abi::bridge::{from_value, to_value};
use teller_abi::lift::Lifter;
use teller_abi::lower::{Lowered, Lowerer, NoAlloc};
use teller_abi::{AbiError, Contract, Flat, ImportFunc, Value};
use teller_contract::{DailyReservation, Error, ErrorCode};
use teller_engine::state::GuestState;

/// What one state function does with its lifted arguments.
type Handler = fn(&GuestState, &Contract, &ImportFunc, Vec<Value>) -> Result<Value, Error>;

/// The `bank:policy/state` import module every policy instance links.
pub(crate) fn state_module(
    contract: &Arc<Contract>,
    state: GuestState,
) -> Result<Arc<HostModule>, Error> {
    let handlers: [(&str, Handler); 2] = [("reserve", reserve), ("daily-total", daily_total)];
    let mut module = HostModule {
        name: String::new(),
        funcs: Vec::new(),
    };
    for (name, handler) in handlers {
        let import = contract
            .import("state", name)
            .map_err(|e| Error::internal(ErrorCode::EngineInit, e.to_string()))?;
        module.name.clone_from(&import.module);
        let (contract, state, import2) = (contract.clone(), state.clone(), import.clone());
        module.funcs.push(HostFunc {
            name: import.name.clone(),
            params: import.core_params.clone(),
            results: import.core_results.clone(),
            call: Box::new(move |caller, args| {
                call(&contract, &import2, caller, args, |values| {
                    handler(&state, &contract, &import2, values)
                })
            }),
        });
    }
    Ok(Arc::new(module))
}

/// The `bank:policy/digest` import module: the audit sealer's SHA-256 on
/// the host's SHA instructions.
pub(crate) fn digest_module(contract: &Arc<Contract>) -> Result<Arc<HostModule>, Error> {
    let import = contract
        .import("digest", "sha256")
        .map_err(|e| Error::internal(ErrorCode::EngineInit, e.to_string()))?;
    let (contract, import2) = (contract.clone(), import.clone());
    Ok(Arc::new(HostModule {
        name: import.module.clone(),
        funcs: vec![HostFunc {
            name: import.name.clone(),
            params: import.core_params.clone(),
            results: import.core_results.clone(),
            call: Box::new(move |caller, args| call(&contract, &import2, caller, args, sha256)),
        }],
    }))
}

fn sha256(values: Vec<Value>) -> Result<Value, Error> {
    let Some(Value::String(data)) = values.into_iter().next() else {
        return Err(bad_output(AbiError("sha256 takes one string".into())));
    };
    let (a, b, c, d) = teller_engine::sha256_words(data.as_bytes());
    Ok(Value::Tuple(vec![
        Value::U64(a),
        Value::U64(b),
        Value::U64(c),
        Value::U64(d),
    ]))
}

/// Lifts the arguments, runs `handler`, lowers its answer.
fn call(
    contract: &Contract,
    import: &ImportFunc,
    caller: &mut Caller,
    args: &[Val],
    handler: impl FnOnce(Vec<Value>) -> Result<Value, Error>,
) -> Result<Vec<Val>, Error> {
    let flat: Vec<Flat> = args.iter().map(|a| Flat::from(*a)).collect();
    let (params, return_ptr) = if import.func.result_indirect {
        match flat.split_last() {
            Some((Flat::I32(ptr), rest)) => (rest, Some(*ptr as u32)),
            _ => return Err(bad_output(AbiError("no return pointer".into()))),
        }
    } else {
        (flat.as_slice(), None)
    };
    let memory = caller
        .memory()
        .ok_or_else(|| bad_output(AbiError("the guest has no memory".into())))?;
    let values = Lifter::new(contract, memory)
        .params(&import.func, params)
        .map_err(bad_output)?;
    let answer = handler(values)?;
    match (
        Lowerer::new(contract, &mut NoAlloc).result(&import.func, &answer),
        return_ptr,
    ) {
        (Ok(Lowered::Flat(flat)), None) => Ok(flat.into_iter().map(Val::from).collect()),
        (Ok(Lowered::Memory { bytes, align }), Some(ptr)) => {
            if !(ptr as usize).is_multiple_of(align) {
                return Err(bad_output(AbiError(format!(
                    "return pointer {ptr:#x} is not {align}-byte aligned"
                ))));
            }
            caller
                .write(ptr, &bytes)
                .map_err(|e| bad_output(AbiError(format!("return area at {ptr:#x}: {e}"))))?;
            Ok(Vec::new())
        }
        (Err(e), _) => Err(Error::internal(ErrorCode::Internal, e.to_string())),
        _ => Err(Error::internal(
            ErrorCode::Internal,
            format!("{}: result lowered the wrong way", import.name),
        )),
    }
}

fn arg<T: serde::de::DeserializeOwned>(
    contract: &Contract,
    import: &ImportFunc,
    values: &mut std::vec::IntoIter<Value>,
    index: usize,
) -> Result<T, Error> {
    let (Some(ty), Some(value)) = (import.func.params.get(index), values.next()) else {
        return Err(bad_output(AbiError(format!(
            "{} is missing argument {index}",
            import.name
        ))));
    };
    from_value(contract, ty, value).map_err(bad_output)
}

fn answer<T: serde::Serialize>(
    contract: &Contract,
    import: &ImportFunc,
    v: &T,
) -> Result<Value, Error> {
    let ty =
        import.func.result.as_ref().ok_or_else(|| {
            Error::internal(ErrorCode::Internal, "a state function without result")
        })?;
    to_value(contract, ty, v).map_err(|e| Error::internal(ErrorCode::Internal, e.to_string()))
}

fn reserve(
    state: &GuestState,
    contract: &Contract,
    import: &ImportFunc,
    values: Vec<Value>,
) -> Result<Value, Error> {
    let mut values = values.into_iter();
    let request: DailyReservation = arg(contract, import, &mut values, 0)?;
    let reservation = state.reserve(&request)?;
    answer(contract, import, &reservation)
}

fn daily_total(
    state: &GuestState,
    contract: &Contract,
    import: &ImportFunc,
    values: Vec<Value>,
) -> Result<Value, Error> {
    let mut values = values.into_iter();
    let key: String = arg(contract, import, &mut values, 0)?;
    let offset: i32 = arg(contract, import, &mut values, 1)?;
    let total = state.daily_total(&key, offset)?;
    answer(contract, import, &total)
}
