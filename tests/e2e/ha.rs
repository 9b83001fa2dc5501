//! Behaviour a load balancer relies on: after SIGTERM, teller says it is
//! draining and goes on serving for the drain delay before it stops
//! accepting, so that health checks take it out of rotation first.

use crate::support::{ENGINES, EXAMPLE, Server};
use std::time::{Duration, Instant};

#[test]
fn after_sigterm_the_drain_delay_serves_on_while_readyz_says_draining() {
    for engine in ENGINES {
        // What is tested is the drain, not the deadline: a generous one, so
        // that a first call on two cores busy with the other tests is not
        // taken for a runaway guest.
        let server = Server::start(
            engine,
            &["--drain-delay-ms", "1500", "--guest-deadline-ms", "2000"],
        );
        assert_eq!(server.get("/readyz").status, 200);
        let signalled = Instant::now();
        server.signal("TERM");
        std::thread::sleep(Duration::from_millis(200));
        assert_eq!(server.get("/readyz").status, 503, "{engine}: draining");
        // New connections are still accepted and answered meanwhile.
        for _ in 0..5 {
            let r = server.post("/v1/transfer/check", EXAMPLE);
            assert_eq!(r.status, 200, "{engine}: {}", r.body);
            std::thread::sleep(Duration::from_millis(100));
        }
        let status = server.stop();
        assert!(status.success(), "{engine}: {status:?}");
        assert!(
            signalled.elapsed() >= Duration::from_millis(1_500),
            "{engine}: stopped before the drain delay was over"
        );
    }
}
