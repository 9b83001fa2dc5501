//! Instances kept across calls. In production only a Rego policy's: the
//! guest's one state is the policy it parsed (Rego has no side effects), and
//! parsing per call would cost more than the decision. `teller bench call`
//! keeps a compiled guest's too ([`Workload::Bench`]), to measure what an
//! instance costs. An instance that fails in any way is dropped; each serves
//! at most [`MAX_CALLS_PER_INSTANCE`] calls.
//!
//! [`Workload::Bench`]: teller_engine::Workload::Bench

use crate::{State, Stores, bindings as wit, load_error};
use std::sync::{Arc, Mutex};
use teller_contract::{
    Decision, Error, ErrorCode, PolicyConfig, PolicyMetadata, PolicyRef, TransferRequest,
};
use teller_engine::artifact::{Artifact, RegoSource};
use teller_engine::{
    MAX_CALLS_PER_INSTANCE, TransferCheck, count_pooled, policy_failed, rego_load_error,
    rego_load_failed, rego_policy_ref,
};
use wasmtime::Store;

/// Ready instances of one guest, one per concurrent caller at most.
struct Kept<T> {
    idle: Mutex<Vec<Instance<T>>>,
}

struct Instance<T> {
    store: Store<State>,
    guest: T,
    calls: u32,
}

impl<T> Kept<T> {
    fn new() -> Self {
        Kept {
            idle: Mutex::new(Vec::new()),
        }
    }

    fn take(&self) -> Option<Instance<T>> {
        let instance = self.idle.lock().ok()?.pop();
        if instance.is_some() {
            count_pooled(-1);
        }
        instance
    }

    fn give_back(&self, instance: Instance<T>) {
        if instance.calls >= MAX_CALLS_PER_INSTANCE {
            return;
        }
        if let Ok(mut idle) = self.idle.lock()
            && teller_engine::pool_keeps(idle.len())
        {
            idle.push(instance);
            count_pooled(1);
        }
    }
}

impl<T> Drop for Kept<T> {
    fn drop(&mut self) {
        let idle = self.idle.get_mut().map_or(0, |idle| idle.len());
        count_pooled(-(idle as i64));
    }
}

/// A Rego policy on the Rego guest, loaded once per instance.
pub(crate) struct RegoCheck {
    policy: PolicyRef,
    stores: Stores,
    pre: wit::source::SourcePolicyPre<State>,
    source: Arc<RegoSource>,
    kept: Kept<wit::source::SourcePolicy>,
}

impl RegoCheck {
    /// Makes the first instance now, so that a policy that does not parse
    /// stops start-up (or a reload) with its file, line and column.
    pub(crate) fn load(engine: &crate::WasmtimeEngine, artifact: &Artifact) -> Result<Self, Error> {
        let (component, _) = engine.component(artifact)?;
        let pre = engine
            .linker
            .instantiate_pre(&component)
            .and_then(wit::source::SourcePolicyPre::new)
            .map_err(|e| load_error(artifact, e))?;
        let source = artifact
            .rego()
            .cloned()
            .ok_or_else(|| Error::internal(ErrorCode::Internal, "not a Rego policy"))?;
        let mut check = RegoCheck {
            policy: PolicyRef {
                name: artifact.name.clone(),
                version: String::new(),
                sha256: source.sha256.clone(),
            },
            stores: engine.stores.clone(),
            pre,
            source,
            kept: Kept::new(),
        };
        let (first, meta) = check.instantiate()?;
        check.policy = rego_policy_ref(artifact, meta)?;
        check.kept.give_back(first);
        Ok(check)
    }

    /// A new instance with the policy loaded, and what the policy says it is.
    fn instantiate(&self) -> Result<(Instance<wit::source::SourcePolicy>, PolicyMetadata), Error> {
        let name = &self.policy.name;
        let mut store = self.stores.new_store();
        let guest = self
            .pre
            .instantiate(&mut store)
            .map_err(|e| self.stores.error(e, &store))?;
        self.stores.arm_for_load(&mut store);
        let loaded = guest
            .bank_policy_source()
            .call_load(
                &mut store,
                &self.source.file,
                &self.source.text,
                &self.source.data,
            )
            .map_err(|e| rego_load_error(name, self.stores.error(e, &store)))?;
        let meta = loaded.map_err(|message| rego_load_failed(name, &message))?;
        let instance = Instance {
            store,
            guest,
            calls: 0,
        };
        Ok((instance, meta))
    }
}

impl TransferCheck for RegoCheck {
    fn policy(&self) -> &PolicyRef {
        &self.policy
    }

    fn check(&self, config: &PolicyConfig, request: &TransferRequest) -> Result<Decision, Error> {
        let mut instance = match self.kept.take() {
            Some(instance) => instance,
            None => self.instantiate()?.0,
        };
        instance.calls += 1;
        self.stores.arm(&mut instance.store);
        let answer = instance
            .guest
            .bank_policy_source()
            .call_check(&mut instance.store, config, request)
            .map_err(|e| self.stores.error(e, &instance.store))?;
        // A rule that failed left the instance as it was: keep it.
        self.kept.give_back(instance);
        answer.map_err(|message| policy_failed(&self.policy.name, &message))
    }
}

/// A compiled guest on kept instances, for `teller bench call`'s warm
/// series.
pub(crate) struct WarmCheck {
    policy: PolicyRef,
    stores: Stores,
    pre: wit::transfer_check::TransferCheckPolicyPre<State>,
    kept: Kept<wit::transfer_check::TransferCheckPolicy>,
}

impl WarmCheck {
    pub(crate) fn new(
        policy: PolicyRef,
        stores: Stores,
        pre: wit::transfer_check::TransferCheckPolicyPre<State>,
    ) -> Self {
        WarmCheck {
            policy,
            stores,
            pre,
            kept: Kept::new(),
        }
    }
}

impl TransferCheck for WarmCheck {
    fn policy(&self) -> &PolicyRef {
        &self.policy
    }

    fn check(&self, config: &PolicyConfig, request: &TransferRequest) -> Result<Decision, Error> {
        let mut instance = match self.kept.take() {
            Some(instance) => instance,
            None => {
                let mut store = self.stores.new_store();
                let guest = self
                    .pre
                    .instantiate(&mut store)
                    .map_err(|e| self.stores.error(e, &store))?;
                Instance {
                    store,
                    guest,
                    calls: 0,
                }
            }
        };
        instance.calls += 1;
        self.stores.arm(&mut instance.store);
        let decision = instance
            .guest
            .bank_policy_transfer_check()
            .call_check(&mut instance.store, config, request)
            .map_err(|e| self.stores.error(e, &instance.store))?;
        self.kept.give_back(instance);
        Ok(decision)
    }
}
