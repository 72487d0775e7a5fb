//! Unit tests of the block queue (the loom models are in `loom-tests`).

use super::*;

fn unlimited() -> Arc<Budget> {
    Budget::new(usize::MAX / 2)
}

#[test]
fn fifo_across_blocks_reports_full_and_reuses_blocks() {
    let budget = unlimited();
    let (mut p, mut c) = block_ring::<u32>(256, 128, budget.clone());
    let mut next_in = 0u32;
    let mut next_out = 0u32;
    for _ in 0..20 {
        while p.push(next_in).is_ok() {
            next_in += 1;
        }
        assert_eq!(next_in - next_out, 256, "full at capacity");
        while let Some(v) = c.pop() {
            assert_eq!(v, next_out);
            next_out += 1;
        }
    }
    // 256 slots are 4 blocks (+1 the producer moves to): recycled, not
    // allocated anew each round.
    assert!(budget.blocks() <= 256 / BLOCK + 2, "{}", budget.blocks());
}

#[test]
fn pop_into_moves_in_order_across_blocks() {
    let (mut p, mut c) = block_ring::<u32>(1024, 512, unlimited());
    let mut out = Vec::new();
    let mut next = 0;
    for _ in 0..7 {
        for _ in 0..(BLOCK * 3 + 5) {
            p.push(next).unwrap();
            next += 1;
        }
        let half = c.pop_into(&mut out, BLOCK + 3);
        assert_eq!(half, BLOCK + 3);
        c.pop_into(&mut out, usize::MAX);
        assert_eq!(c.pop_into(&mut out, usize::MAX), 0);
    }
    assert!(out.iter().copied().eq(0..next));
}

#[test]
fn a_spent_budget_makes_the_queue_full_until_it_is_read() {
    // No block beyond each queue's first.
    let budget = Budget::new(0);
    let (mut p, mut c) = block_ring::<u32>(1024, 512, budget.clone());
    for i in 0..BLOCK as u32 {
        p.push(i).unwrap();
    }
    assert_eq!(p.push(99), Err(Full(99)), "the budget, not the capacity");
    assert_eq!(c.pop(), Some(0));
    // Still unread values: the block cannot be reused yet.
    assert_eq!(p.push(99), Err(Full(99)));
    while c.pop().is_some() {}
    // All read: the producer links its block to itself and goes on.
    for i in 0..(BLOCK as u32 * 3) {
        p.push(i).unwrap();
        assert_eq!(c.pop(), Some(i));
    }
    assert_eq!(budget.blocks(), 1);
}

#[test]
fn a_self_link_is_not_rewritten_before_the_consumer_followed_it() {
    let budget = Budget::new(1);
    let (mut p, mut c) = block_ring::<u32>(1024, 512, budget.clone());
    // Fill the first block and read it all: no spare, but budget for
    // one more block... spend it on another queue.
    let (mut other, _oc) = block_ring::<u32>(1024, 512, budget.clone());
    for i in 0..=BLOCK as u32 {
        other.push(i).unwrap();
    }
    for i in 0..BLOCK as u32 {
        p.push(i).unwrap();
    }
    while c.pop().is_some() {}
    // Self-link; fill the block again without the consumer crossing.
    for i in 0..BLOCK as u32 {
        p.push(i).unwrap();
    }
    // The next block needs a new link, but the consumer has not read
    // past the self-link yet: refused.
    assert_eq!(p.push(7), Err(Full(7)));
    assert_eq!(c.pop(), Some(0));
    // Now it has; everything else is unread, so still no block.
    assert_eq!(p.push(7), Err(Full(7)));
    while c.pop().is_some() {}
    p.push(7).unwrap();
    assert_eq!(c.pop(), Some(7));
}

#[test]
fn idle_memory_goes_back_to_one_block() {
    let budget = unlimited();
    let (mut p, mut c) = block_ring::<[u8; 100]>(4096, 2048, budget.clone());
    for _ in 0..4000 {
        p.push([1; 100]).unwrap();
    }
    let mut out = Vec::new();
    c.pop_into(&mut out, usize::MAX);
    assert!(budget.blocks() > 32, "{}", budget.blocks());
    c.release_spare();
    assert_eq!(budget.blocks(), 1, "the producer's current block only");
}

#[test]
fn drop_releases_values_and_blocks() {
    let value = std::sync::Arc::new(());
    let budget = unlimited();
    {
        let (mut p, mut c) = block_ring(1024, 512, budget.clone());
        for _ in 0..(BLOCK * 5 + 3) {
            p.push(value.clone()).unwrap();
        }
        for _ in 0..(BLOCK + 1) {
            c.pop().unwrap();
        }
        drop(p);
        drop(c);
    }
    assert_eq!(std::sync::Arc::strong_count(&value), 1);
    assert_eq!(budget.blocks(), 0);
}

#[test]
fn threads_hand_over_every_value_in_order() {
    let budget = Budget::new(8);
    let (mut p, mut c) = block_ring::<u64>(1024, 512, budget.clone());
    const N: u64 = 300_000;
    let producer = std::thread::spawn(move || {
        for i in 0..N {
            let mut v = i;
            while let Err(Full(back)) = p.push(v) {
                v = back;
                std::hint::spin_loop();
            }
        }
    });
    let mut expected = 0;
    let mut out = Vec::new();
    while expected < N {
        out.clear();
        c.pop_into(&mut out, 100);
        for &v in &out {
            assert_eq!(v, expected);
            expected += 1;
        }
    }
    producer.join().unwrap();
    drop(c);
    assert_eq!(budget.blocks(), 0);
}

/// The wake-up threshold, below half the ring: `push_from` calls `wake`
/// exactly when the queue holds `wake_at` values, once per drain, never
/// before (after a drain: within `wake_at / 4` pushes); `wake_due` agrees; a threshold above half is held to half.
#[test]
fn wake_comes_at_the_threshold_once_per_drain() {
    for wake_at in [1usize, 7, 64, 100, 512] {
        let (mut p, mut c) = block_ring::<u32>(1024, wake_at, unlimited());
        let mut wakes = Vec::new();
        for v in 0..(wake_at + 100) as u32 {
            let held = v as usize;
            assert_eq!(
                c.wake_due(),
                held >= wake_at,
                "wake_at {wake_at}, {held} held"
            );
            assert!(p.push_from(&mut Some(v), || wakes.push(held)));
        }
        assert_eq!(
            wakes,
            vec![wake_at],
            "wake_at {wake_at}: one wake, when {wake_at} were held"
        );
        // A drain of some, still past the threshold: a wake again within
        // the producer's re-check step (`wake_at / 4` pushes), once.
        let mut out = Vec::new();
        c.pop_into(&mut out, 10);
        wakes.clear();
        for v in 0..=(wake_at / 4) as u32 {
            assert!(p.push_from(&mut Some(v), || wakes.push(0)));
        }
        assert_eq!(
            wakes.len(),
            1,
            "wake_at {wake_at}: a new head, one new wake"
        );
    }
    let (_p, mut c) = block_ring::<u32>(8, 1000, unlimited());
    assert!(!c.wake_due());
    assert_eq!(c.wake_at, 4);
}

/// A queue the budget holds below its threshold (one block, no budget for
/// a second): the refused push calls `wake` once per drain, and `wake_due`
/// reports the refusal until the consumer reads, then no longer.
#[test]
fn a_refusal_below_the_threshold_is_due_until_a_read() {
    let (mut p, mut c) = block_ring::<usize>(1024, 512, Budget::new(0));
    let mut wakes = 0;
    for v in 0..BLOCK {
        assert!(p.push_from(&mut Some(v), || wakes += 1));
    }
    assert_eq!(wakes, 0, "one block, far below the threshold");
    assert!(!c.wake_due());
    for _ in 0..3 {
        assert!(!p.push_from(&mut Some(BLOCK), || wakes += 1));
    }
    assert_eq!(wakes, 1, "three refusals under one head: one wake");
    assert!(c.wake_due(), "the refusal is due");
    assert!(c.wake_due(), "and stays due while nothing is read");
    assert_eq!(c.pop(), Some(0));
    assert!(!c.wake_due(), "a read answers it");
    // The block is still the producer's and not empty: refused again, under
    // a new head, so a new wake and due again.
    assert!(!p.push_from(&mut Some(BLOCK), || wakes += 1));
    assert_eq!(wakes, 2);
    assert!(c.wake_due());
    let mut out = Vec::new();
    c.pop_into(&mut out, BLOCK);
    assert!(!c.wake_due());
    assert!(
        p.push_from(&mut Some(BLOCK), || wakes += 1),
        "empty: reused"
    );
    assert_eq!(wakes, 2);
}

/// Values read in place stay in their slots until released: the producer
/// sees the queue full with them, a block is reused only once everything
/// in it is released, and random read and release sizes see every value
/// once, in order, where it lies (checked against a plain FIFO model).
#[test]
fn values_read_in_place_stay_until_released() {
    let budget = Budget::new(4);
    let (mut p, mut c) = block_ring::<u64>(256, 64, budget.clone());
    let mut rng = 0x9e37_79b9_7f4a_7c15_u64;
    let mut next = || {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng
    };
    let (mut pushed, mut released) = (0u64, 0u64);
    // Pointers to the values read in place and not released, in order.
    let mut held: std::collections::VecDeque<*mut u64> = Default::default();
    for _ in 0..20_000 {
        match next() % 3 {
            0 => {
                for _ in 0..next() % 80 {
                    match p.push(pushed) {
                        Ok(()) => pushed += 1,
                        Err(Full(v)) => {
                            assert_eq!(v, pushed);
                            break;
                        }
                    }
                }
            }
            1 => {
                let (first, n) = c.read_in_place((next() % 100) as usize);
                assert_eq!(first.is_null(), n == 0);
                assert!(n <= BLOCK);
                for k in 0..n {
                    // SAFETY: `k < n`, read in place just now.
                    held.push_back(unsafe { first.add(k) });
                }
            }
            _ => {
                let n = (next() % 100) as usize % (held.len() + 1);
                c.forget_read(n);
                released += n as u64;
                for _ in 0..n {
                    held.pop_front();
                }
            }
        }
        // Every value held is still where it was read, in order.
        for (k, &v) in held.iter().enumerate() {
            // SAFETY: read in place and not released.
            assert_eq!(unsafe { *v }, released + k as u64);
        }
        assert!(pushed - released <= 256);
        assert!(budget.blocks() <= 5, "the first block and the budget of 4");
    }
    c.forget_read(held.len());
    let mut rest = Vec::new();
    c.pop_into(&mut rest, usize::MAX);
    let first = released + held.len() as u64;
    assert!(rest.iter().copied().eq(first..pushed));
}

/// Dropping the queue with values read in place and not released drops
/// them once (they are still the queue's); values released with
/// `forget_read` are not dropped by the queue.
#[test]
fn values_read_in_place_are_dropped_with_the_queue_unless_released() {
    let drops = std::rc::Rc::new(std::cell::Cell::new(0));
    struct Counted(std::rc::Rc<std::cell::Cell<usize>>);
    impl Drop for Counted {
        fn drop(&mut self) {
            self.0.set(self.0.get() + 1);
        }
    }
    let (mut p, mut c) = block_ring::<Counted>(256, 64, unlimited());
    for _ in 0..(BLOCK * 2 + 3) {
        assert!(p.push(Counted(drops.clone())).is_ok());
    }
    let (first, n) = c.read_in_place(BLOCK);
    assert_eq!(n, BLOCK);
    // What a caller does before it releases: moves the values out.
    for k in 0..5 {
        // SAFETY: read in place, not released; released right after, so
        // never read again.
        drop(unsafe { first.add(k).read() });
    }
    c.forget_read(5);
    assert_eq!(drops.get(), 5);
    let (_, m) = c.read_in_place(BLOCK);
    assert_eq!(m, BLOCK);
    drop(p);
    drop(c);
    assert_eq!(drops.get(), BLOCK * 2 + 3, "each value dropped once");
}
