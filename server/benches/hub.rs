//! The hub's publish path from 1 and 2 threads, each publishing to rooms of its own: with no
//! lock shared by all rooms, two threads carry about twice the deliveries of one (issue 19,
//! item 5). Each step is one message to each thread's room, of 100 or 1,000 members (the
//! larger the room, the smaller the share of the journal thread, which competes for the same two
//! cores here); subscribers' outboxes are drained between timed chunks, every thread stopped.

use std::sync::Barrier;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use parley_server::benching::{HubBench, RoomBench};

const MEMBERS: [usize; 2] = [100, 1000];
/// Messages per room between drains.
const CHUNK: u64 = 200;

fn publish_from_threads(c: &mut Criterion) {
    let mut group = c.benchmark_group("hub_publish");
    group.measurement_time(Duration::from_secs(8));
    for members in MEMBERS {
        for threads in [1, 2] {
            let (bench, mut rooms) =
                HubBench::new(&format!("{members}-{threads}"), threads, members).expect("hub");
            group.throughput(Throughput::Elements((threads * members) as u64));
            group.bench_function(format!("{members}/threads/{threads}"), |b| {
                b.iter_custom(|iters| run(&bench, &mut rooms, iters))
            });
        }
    }
    group.finish();
}

/// Each thread publishes `iters` messages to its room, in chunks timed together: the wall time
/// of the publishing, drains left out.
fn run(bench: &HubBench, rooms: &mut [RoomBench], iters: u64) -> Duration {
    let barrier = Barrier::new(rooms.len());
    let mut timed = Duration::ZERO;
    std::thread::scope(|scope| {
        let handles: Vec<_> = rooms
            .iter_mut()
            .enumerate()
            .map(|(i, room)| {
                let barrier = &barrier;
                scope.spawn(move || {
                    let _runtime = bench.enter();
                    let mut timed = Duration::ZERO;
                    let mut left = iters;
                    while left > 0 {
                        let n = left.min(CHUNK);
                        barrier.wait();
                        let started = Instant::now();
                        room.publish(n as usize);
                        barrier.wait();
                        if i == 0 {
                            timed += started.elapsed();
                        }
                        room.drain();
                        left -= n;
                    }
                    timed
                })
            })
            .collect();
        for (i, handle) in handles.into_iter().enumerate() {
            let t = handle.join().expect("publishing thread");
            if i == 0 {
                timed = t;
            }
        }
    });
    timed
}

criterion_group!(benches, publish_from_threads);
criterion_main!(benches);
