//! The search: is there an order of a history's operations, each placed somewhere between its
//! invocation and its response, in which a sequential [`Model`] produces every observed answer?
//!
//! Wing & Gong's algorithm with Lowe's memoization, as Porcupine and Knossos run it (Horn &
//! Kroening, "Faster linearizability checking via P-compositionality", 2015): depth-first, it
//! linearizes next any operation invoked before the earliest response still outstanding; a
//! configuration (set of operations linearized, model state) seen before is not explored again;
//! a dead end backtracks. An operation without a response (the client never heard back: a lost
//! message, a timeout) may take effect at any point after its invocation, or never — it need not be
//! linearized, as Knossos treats an indeterminate operation.
//!
//! The search is exponential in the worst case; it gives up after a budget of steps and says so
//! ([`Verdict::Inconclusive`]) rather than pass or fail a history it did not finish.

use std::collections::HashSet;
use std::fmt::Debug;
use std::hash::{BuildHasherDefault, DefaultHasher, Hash};

/// A sequential specification: the state, and which states an operation with its observed answer
/// can lead to from a given one.
pub trait Model {
    type State: Clone + Eq + Hash + Debug;
    type Op: Debug;

    /// The state after `op` (with the answer it got, if any) from `state`, or `None` if the answer
    /// cannot be observed from that state.
    fn step(&self, state: &Self::State, op: &Self::Op) -> Option<Self::State>;
}

/// One operation of a history: its invocation and response as positions in one total order of
/// events (a position is never shared), and what it did and saw.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry<Op> {
    pub invoked: u64,
    /// `None`: no response; the operation may or may not have taken effect.
    pub returned: Option<u64>,
    pub op: Op,
}

/// What the search concluded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict<State> {
    /// A linearization exists.
    Linearizable,
    /// None exists. `linearized` is the longest prefix of a linearization the search found (entry
    /// indices in order), `state` the model's state after it, and `stuck` the entries that could
    /// not go next from there (the earliest-responding completed one first).
    NotLinearizable { linearized: Vec<usize>, state: State, stuck: Vec<usize> },
    /// The budget of search steps ran out first.
    Inconclusive { steps: u64 },
}

/// A set of entry indices, hashable for the memo.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Bits(Vec<u64>);

impl Bits {
    fn new(len: usize) -> Bits {
        Bits(vec![0; len.div_ceil(64)])
    }
    fn get(&self, i: usize) -> bool {
        self.0[i / 64] & (1 << (i % 64)) != 0
    }
    fn set(&mut self, i: usize) {
        self.0[i / 64] |= 1 << (i % 64);
    }
    fn clear(&mut self, i: usize) {
        self.0[i / 64] &= !(1 << (i % 64));
    }
}

struct Frame<S> {
    entry: usize,
    before: S,
    /// Where the level below this one resumes its candidates.
    cursor: usize,
}

/// Check `history` against `model` from `init`, giving up after `budget` search steps.
///
/// Memo lookups use a fixed-key hasher, and nothing iterates the memo, so the search is the same on
/// every run.
pub fn check<M: Model>(model: &M, init: M::State, history: &[Entry<M::Op>], budget: u64) -> Verdict<M::State> {
    let n = history.len();
    // Candidates in invocation order: whatever goes next was invoked before the earliest
    // outstanding response, so the scan of this order stops at the first one invoked after it.
    let mut order: Vec<usize> = (0..n).collect();
    order.sort_by_key(|&i| history[i].invoked);
    let completed = history.iter().filter(|e| e.returned.is_some()).count();
    let mut linearized = Bits::new(n);
    let mut done_completed = 0usize;
    let mut state = init;
    let mut stack: Vec<Frame<M::State>> = Vec::new();
    let mut memo: HashSet<(Bits, M::State), BuildHasherDefault<DefaultHasher>> = HashSet::default();
    let mut cursor = 0usize;
    let mut steps = 0u64;
    // The deepest point reached, for the explanation of a failure.
    let mut deepest: (Vec<usize>, M::State, Bits) = (Vec::new(), state.clone(), linearized.clone());
    loop {
        if done_completed == completed {
            return Verdict::Linearizable;
        }
        steps += 1;
        if steps > budget {
            return Verdict::Inconclusive { steps: budget };
        }
        let bound = (0..n)
            .filter(|&i| !linearized.get(i))
            .filter_map(|i| history[i].returned)
            .min()
            .expect("a completed entry is still to be linearized");
        let mut advanced = false;
        while cursor < order.len() {
            let i = order[cursor];
            cursor += 1;
            if linearized.get(i) {
                continue;
            }
            if history[i].invoked > bound {
                cursor = order.len();
                break;
            }
            let Some(next) = model.step(&state, &history[i].op) else { continue };
            linearized.set(i);
            if memo.insert((linearized.clone(), next.clone())) {
                stack.push(Frame { entry: i, before: std::mem::replace(&mut state, next), cursor });
                if history[i].returned.is_some() {
                    done_completed += 1;
                }
                cursor = 0;
                advanced = true;
                if stack.len() > deepest.0.len() {
                    deepest = (stack.iter().map(|f| f.entry).collect(), state.clone(), linearized.clone());
                }
                break;
            }
            linearized.clear(i);
        }
        if advanced {
            continue;
        }
        match stack.pop() {
            Some(frame) => {
                linearized.clear(frame.entry);
                if history[frame.entry].returned.is_some() {
                    done_completed -= 1;
                }
                state = frame.before;
                cursor = frame.cursor;
            }
            None => {
                let (prefix, state, done) = deepest;
                let mut stuck: Vec<usize> = (0..n).filter(|&i| !done.get(i) && history[i].returned.is_some()).collect();
                stuck.sort_by_key(|&i| history[i].returned);
                return Verdict::NotLinearizable { linearized: prefix, state, stuck };
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A register holding a number, starting at 0.
    struct Register;

    #[derive(Debug, Clone, PartialEq, Eq)]
    enum RegisterOp {
        Write(u32),
        /// A read and what it saw.
        Read(u32),
    }

    impl Model for Register {
        type State = u32;
        type Op = RegisterOp;
        fn step(&self, state: &u32, op: &RegisterOp) -> Option<u32> {
            match op {
                RegisterOp::Write(v) => Some(*v),
                RegisterOp::Read(v) => (v == state).then_some(*state),
            }
        }
    }

    fn e(invoked: u64, returned: Option<u64>, op: RegisterOp) -> Entry<RegisterOp> {
        Entry { invoked, returned, op }
    }

    use RegisterOp::{Read, Write};

    #[test]
    fn concurrent_reads_may_see_either_side_of_a_write() {
        // C0 |----- write 100 -----|
        // C1    |- read 100 -|
        // C2      |- read 0 -|
        let history = [e(0, Some(7), Write(100)), e(1, Some(4), Read(100)), e(2, Some(5), Read(0))];
        assert_eq!(check(&Register, 0, &history, 1_000), Verdict::Linearizable);
    }

    #[test]
    fn a_read_after_a_newer_read_may_not_go_back() {
        // C0 |----------- write 100 -----------|
        // C1    |- read 100 -|
        // C2                   |- read 0 -|
        let history = [e(0, Some(9), Write(100)), e(1, Some(3), Read(100)), e(4, Some(6), Read(0))];
        let Verdict::NotLinearizable { stuck, .. } = check(&Register, 0, &history, 1_000) else {
            panic!("must not be linearizable")
        };
        assert!(stuck.contains(&2), "{stuck:?}");
    }

    #[test]
    fn a_read_after_an_acknowledged_write_sees_it() {
        let history = [e(0, Some(1), Write(5)), e(2, Some(3), Read(0))];
        let verdict = check(&Register, 0, &history, 1_000);
        assert_eq!(verdict, Verdict::NotLinearizable { linearized: vec![0], state: 5, stuck: vec![1] });
    }

    #[test]
    fn an_unanswered_write_may_apply_late_or_never() {
        // The write never answered: reads may see it from some point on, or never.
        let late = [e(0, None, Write(7)), e(1, Some(2), Read(0)), e(3, Some(4), Read(7)), e(5, Some(6), Read(7))];
        assert_eq!(check(&Register, 0, &late, 1_000), Verdict::Linearizable);
        let never = [e(0, None, Write(7)), e(1, Some(2), Read(0)), e(3, Some(4), Read(0))];
        assert_eq!(check(&Register, 0, &never, 1_000), Verdict::Linearizable);
        // ...but once seen it stays.
        let flicker = [e(0, None, Write(7)), e(1, Some(2), Read(7)), e(3, Some(4), Read(0))];
        assert!(matches!(check(&Register, 0, &flicker, 1_000), Verdict::NotLinearizable { .. }));
    }

    #[test]
    fn many_overlapping_writes_are_searched_within_the_budget() {
        // 12 writes all at once, then reads of the value the last one must have written: the
        // memo keeps this far below 12! orders.
        let mut history: Vec<Entry<RegisterOp>> = (0..12).map(|v| e(v, Some(100 + v), Write(v as u32))).collect();
        history.push(e(200, Some(201), Read(5)));
        history.push(e(202, Some(203), Read(5)));
        assert_eq!(check(&Register, 0, &history, 100_000), Verdict::Linearizable);
        history.push(e(204, Some(205), Read(6)));
        assert!(matches!(check(&Register, 0, &history, 100_000), Verdict::NotLinearizable { .. }));
    }

    #[test]
    fn the_budget_makes_it_inconclusive_not_wrong() {
        let history: Vec<Entry<RegisterOp>> = (0..12).map(|v| e(v, Some(100 + v), Write(v as u32))).collect();
        assert_eq!(check(&Register, 0, &history, 3), Verdict::Inconclusive { steps: 3 });
    }
}
