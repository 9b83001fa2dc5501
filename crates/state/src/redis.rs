//! Daily totals in Redis, shared by every replica: each reservation is one
//! Lua script run atomically by the server (check, add, remember the request
//! id), and every key expires a day after its day ends.
//!
//! The client is `redis`'s connection manager, which reconnects by itself,
//! on a runtime of its own: guests call from worker threads, which wait for
//! the answer at most the state deadline and then fail closed.

use std::time::Duration;
use teller_contract::{DailyReservation, Reservation};
use teller_engine::state::{Day, Granted, Reserved, StateError, StateStore};

/// KEYS: the total, the request ids' hash. ARGV: amount, limit, request id
/// (empty for none), seconds to keep. Returns {granted, total, replayed}.
/// Amounts and limits are below 2^53, so Lua's doubles hold them exactly.
/// A request id is remembered with its amount and limit: the same id with
/// another amount or limit is refused, never given the first one's grant.
const RESERVE: &str = r"
local amount, limit, id, ttl = tonumber(ARGV[1]), tonumber(ARGV[2]), ARGV[3], ARGV[4]
if id ~= '' then
  local seen = redis.call('HGET', KEYS[2], id)
  if seen then
    local granted, total, was_amount, was_limit = string.match(seen, '^(%d):(%d+):(%d+):(%d+)')
    if was_amount == ARGV[1] and was_limit == ARGV[2] then
      if granted == '1' and string.sub(seen, -2) ~= ':r' then
        redis.call('HSET', KEYS[2], id, seen .. ':r')
      end
      return {tonumber(granted), tonumber(total), 1}
    end
    return {0, tonumber(redis.call('GET', KEYS[1]) or '0'), 0}
  end
end
local total = tonumber(redis.call('GET', KEYS[1]) or '0')
local granted = 0
if amount <= limit and total + amount <= limit then
  total = redis.call('INCRBY', KEYS[1], ARGV[1])
  redis.call('EXPIRE', KEYS[1], ttl)
  granted = 1
end
if id ~= '' then
  redis.call('HSET', KEYS[2], id, granted .. ':' .. string.format('%d', total) .. ':' .. ARGV[1] .. ':' .. ARGV[2])
  redis.call('EXPIRE', KEYS[2], ttl)
end
return {granted, total, 0}
";

/// KEYS: the total, the request ids' hash. ARGV: amount, request id.
/// Takes back a granted reservation once, unless a retry has been given it
/// (`:r`): that retry may have been allowed.
const RELEASE: &str = r"
local id = ARGV[2]
if id ~= '' then
  local seen = redis.call('HGET', KEYS[2], id)
  if not seen or string.sub(seen, 1, 1) ~= '1' or string.sub(seen, -2) == ':r' then return 0 end
  redis.call('HDEL', KEYS[2], id)
end
local total = tonumber(redis.call('GET', KEYS[1]) or '0')
local amount = math.min(tonumber(ARGV[1]), total)
if amount > 0 then redis.call('DECRBY', KEYS[1], amount) end
return 1
";

/// KEYS: the total. A read is a script too, so every call takes one path.
const GET: &str = "return tonumber(redis.call('GET', KEYS[1]) or '0')";

pub struct Redis {
    /// Set once the scripts are loaded: Redis has answered.
    ready: std::sync::Arc<std::sync::atomic::AtomicBool>,
    /// The address, without credentials, for messages.
    shown: String,
    connection: redis::aio::ConnectionManager,
    /// Always `Some` until dropped (then shut down without waiting: a
    /// server may drop it from its own async context).
    runtime: Option<tokio::runtime::Runtime>,
    timeout: Duration,
    reserve: redis::Script,
    release: redis::Script,
    get: redis::Script,
}

impl Redis {
    /// A store at `url` (`redis://[:PASSWORD@]HOST:PORT[/DB]`). Connects
    /// lazily: a Redis that is down at start-up makes transfers fail closed
    /// until it is up, it does not stop teller.
    pub fn open(url: &str, timeout: Duration) -> Result<Redis, StateError> {
        use redis::IntoConnectionInfo;
        let bad_url =
            |e: redis::RedisError| StateError(format!("--state {}: {e}", crate::redact(url)));
        // Without TCP_NODELAY (the client's default is off), a request
        // written while another is unacknowledged waits for the server's
        // delayed ACK: 40 ms stalls on a multiplexed connection under load.
        let info = url
            .into_connection_info()
            .map_err(bad_url)?
            .set_tcp_settings(redis::io::tcp::TcpSettings::default().set_nodelay(true));
        let client = redis::Client::open(info).map_err(bad_url)?;
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("teller-redis")
            .enable_all()
            .build()
            .map_err(|e| StateError(format!("cannot start the Redis client's runtime: {e}")))?;
        let config = redis::aio::ConnectionManagerConfig::new()
            .set_connection_timeout(Some(timeout))
            .set_response_timeout(Some(timeout))
            .set_number_of_retries(1)
            .set_max_delay(Duration::from_millis(500));
        let connection = {
            let _in_runtime = runtime.enter();
            redis::aio::ConnectionManager::new_lazy_with_config(client, config)
                .map_err(|e| StateError(format!("--state {}: {e}", crate::redact(url))))?
        };
        let (reserve, release, get) = (
            redis::Script::new(RESERVE),
            redis::Script::new(RELEASE),
            redis::Script::new(GET),
        );
        // Connect and load the scripts now, in the background, retrying
        // until Redis answers, so that the first decisions do not pay for
        // it; until then the replica is not ready (and a decision fails
        // closed).
        let ready = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        {
            let mut connection = connection.clone();
            let scripts = [reserve.clone(), release.clone(), get.clone()];
            let (shown, ready) = (crate::redact(url), ready.clone());
            runtime.spawn(async move {
                let mut warned = false;
                loop {
                    let mut loaded = Ok(());
                    for script in &scripts {
                        loaded = script.load_async(&mut connection).await.map(drop);
                        if loaded.is_err() {
                            break;
                        }
                    }
                    match loaded {
                        Ok(()) => {
                            ready.store(true, std::sync::atomic::Ordering::Relaxed);
                            tracing::info!("Redis {shown} answers");
                            return;
                        }
                        Err(e) if !warned => {
                            warned = true;
                            tracing::warn!("Redis {shown} is not reachable yet: {e}");
                        }
                        Err(_) => {}
                    }
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            });
        }
        Ok(Redis {
            ready,
            shown: crate::redact(url),
            connection,
            runtime: Some(runtime),
            timeout,
            reserve,
            release,
            get,
        })
    }

    /// Runs `script` on the client's runtime and waits for it, at most the
    /// deadline.
    fn run<T: redis::FromRedisValue + Send + 'static>(
        &self,
        script: &redis::Script,
        keys: [String; 2],
        args: Vec<String>,
    ) -> Result<T, StateError> {
        let (script, mut connection) = (script.clone(), self.connection.clone());
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        let timeout = self.timeout;
        let Some(runtime) = &self.runtime else {
            return Err(StateError("the Redis client is shut down".into()));
        };
        runtime.spawn(async move {
            let answer =
                tokio::time::timeout(timeout, invoke::<T>(&script, &mut connection, keys, args))
                    .await;
            let _ = tx.send(answer);
        });
        match rx.recv_timeout(self.timeout + Duration::from_millis(5)) {
            Ok(Ok(Ok(value))) => Ok(value),
            Ok(Ok(Err(e))) => Err(StateError(format!("Redis {}: {e}", self.shown))),
            Ok(Err(_)) | Err(_) => Err(StateError(format!(
                "Redis {} did not answer within {} ms",
                self.shown,
                self.timeout.as_millis()
            ))),
        }
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

impl Redis {
    /// Runs `script` without waiting for it.
    fn spawn(&self, script: &redis::Script, keys: [String; 2], args: Vec<String>) -> Option<()> {
        let runtime = self.runtime.as_ref()?;
        let (script, mut connection) = (script.clone(), self.connection.clone());
        runtime.spawn(async move {
            let _ = invoke::<u8>(&script, &mut connection, keys, args).await;
        });
        Some(())
    }
}

/// One script call with its keys and arguments.
async fn invoke<T: redis::FromRedisValue>(
    script: &redis::Script,
    connection: &mut redis::aio::ConnectionManager,
    keys: [String; 2],
    args: Vec<String>,
) -> redis::RedisResult<T> {
    let mut invocation = script.prepare_invoke();
    for key in keys {
        invocation.key(key);
    }
    for arg in args {
        invocation.arg(arg);
    }
    invocation.invoke_async(connection).await
}

/// The keys of one total: a hash tag keeps both in one Redis Cluster slot.
fn keys(day: Day, key: &str) -> [String; 2] {
    let total = format!("teller:daily:{{{}:{key}}}", day.number);
    let ids = format!("{total}:requests");
    [total, ids]
}

impl StateStore for Redis {
    fn kind(&self) -> &'static str {
        "redis"
    }

    fn ready(&self) -> bool {
        self.ready.load(std::sync::atomic::Ordering::Relaxed)
    }

    fn reserve(&self, day: Day, r: &DailyReservation) -> Result<Reserved, StateError> {
        let reserved: Result<(u8, u64, u8), StateError> = self.run(
            &self.reserve,
            keys(day, &r.key),
            vec![
                r.amount.to_string(),
                r.limit.to_string(),
                r.request_id.clone().unwrap_or_default(),
                day.ttl_seconds().to_string(),
            ],
        );
        let (granted, total, replayed) = match reserved {
            Ok(answer) => answer,
            Err(e) => {
                // Redis may still run the script after teller gave up: with
                // a request id, take back whatever it grants (the release
                // follows the reservation on the same connection, and undoes
                // only a grant of that id).
                if let Some(id) = &r.request_id {
                    let _ = self.spawn(
                        &self.release,
                        keys(day, &r.key),
                        vec![r.amount.to_string(), id.clone()],
                    );
                }
                return Err(e);
            }
        };
        Ok(Reserved {
            answer: Reservation {
                granted: granted == 1,
                total,
            },
            replayed: replayed == 1,
        })
    }

    fn release(&self, g: &Granted) -> Result<(), StateError> {
        let _: u8 = self.run(
            &self.release,
            keys(g.day, &g.key),
            vec![
                g.amount.to_string(),
                g.request_id.clone().unwrap_or_default(),
            ],
        )?;
        Ok(())
    }

    fn daily_total(&self, day: Day, key: &str) -> Result<u64, StateError> {
        self.run(&self.get, keys(day, key), Vec::new())
    }
}
