//! Cost of choosing a products pod: the ring lookup alone, a keyed pick with bounded load (and a
//! fading stage), and a keyless P2C pick, on 20 pods with some load. Single thread.
//!
//! `cargo bench -p prapi-dataplane --bench lb` (part of `make bench`). `PRAPI_BENCH_PICKS` sets
//! the picks per measurement (default 2,000,000).

use std::hint::black_box;
use std::sync::Arc;
use std::time::Instant;

use prapi::clock::MonotonicClock;
use prapi::lb::{Balancer, BalancerConfig, Endpoint, Ring};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

// The allocator of the `prapi` binary (src/main.rs), so the figures are the binary's.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() {
    let picks: usize = std::env::var("PRAPI_BENCH_PICKS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2_000_000);
    let endpoints: Vec<Endpoint> = (1..=20)
        .map(|i| Endpoint::parse(&format!("http://10.2.0.{i}:8080")).expect("endpoint"))
        .collect();
    let keys: Vec<String> = (0..65_536).map(|i| format!("P{i:08}")).collect();

    let ring = Ring::new(&endpoints.iter().map(Endpoint::as_str).collect::<Vec<_>>());
    let ns = measure(picks, |i| {
        black_box(ring.owner(&keys[i & 0xffff]));
    });
    println!("ring owner            {ns:7.1} ns/pick");

    let balancer = Balancer::new(BalancerConfig::default(), Arc::new(MonotonicClock::new()));
    balancer.set_endpoints(&endpoints[..19]);
    balancer.set_endpoints(&endpoints); // one pod fading in: two stages
    // Some requests in flight on every pod, so the load is computed, not trivially zero.
    let mut guards = Vec::new();
    for (i, k) in keys.iter().take(60).enumerate() {
        let b = balancer.pick(k, None).expect("pick");
        if i % 2 == 0 {
            guards.push(balancer.start(b));
        }
    }
    let ns = measure(picks, |i| {
        black_box(balancer.pick(&keys[i & 0xffff], None));
    });
    println!("keyed pick (bounded)  {ns:7.1} ns/pick");

    let mut rng = ChaCha8Rng::seed_from_u64(1);
    let ns = measure(picks, |_| {
        black_box(balancer.pick_any(&mut rng, None));
    });
    println!("keyless pick (P2C)    {ns:7.1} ns/pick");
    drop(guards);
}

fn measure(n: usize, mut f: impl FnMut(usize)) -> f64 {
    for i in 0..n / 10 {
        f(i);
    }
    let start = Instant::now();
    for i in 0..n {
        f(i);
    }
    start.elapsed().as_nanos() as f64 / n as f64
}
