//! Runtime calls: the clock, timers, task spawning and the seeded rng.
//!
//! Written in `tokio::` names only, where `tokio` is madsim-tokio: real tokio in the normal build and
//! madsim's virtual time and seeded scheduler under `--cfg madsim`. openraft's [`AsyncRuntime`] is
//! implemented here, once, on the same calls.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Wake, Waker};
use std::time::Duration;

use openraft::async_runtime::TokioOneShotSender;
use openraft::{AsyncRuntime, OptionalSend, TokioInstant};
use rand::{Rng, RngCore};

/// A point in (possibly virtual) time. Under madsim, `Instant::now()` reads virtual time.
pub type Instant = TokioInstant;

/// The current instant on this runtime's clock.
pub fn now() -> Instant {
    <TokioInstant as openraft::Instant>::now()
}

/// Wall-clock milliseconds since the Unix epoch, for timestamps that are shown to users or stamped
/// into proposals by the leader. Virtual (deterministic) under madsim.
pub fn unix_millis() -> u64 {
    unix_nanos() / 1_000_000
}

/// Wall-clock nanoseconds since the Unix epoch (container log lines); virtual under madsim.
pub fn unix_nanos() -> u64 {
    // madsim intercepts the libc clock, so SystemTime is virtual in the simulator.
    #[allow(clippy::disallowed_methods)]
    let now = std::time::SystemTime::now();
    now.duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos() as u64).unwrap_or(0)
}

/// Sleep for `duration` on the runtime's clock.
pub fn sleep(duration: Duration) -> Sleep {
    Sleep { timer: Box::pin(tokio::time::sleep(duration)), relay: None }
}

/// A sleep that arms the runtime's timer once, however often it is polled.
///
/// madsim's `Sleep` adds a timer entry on *every* poll while pending, and its timer heap cannot
/// cancel entries. A sleep polled again whenever its task wakes for something else (a `select!`
/// branch, a [`Timeout`] around a busy future) piled up duplicate entries, each of which later woke
/// the task for nothing, and a woken task re-armed its other sleeps again: with a thousand agents
/// most of the simulator's time went into that heap. Here the runtime's timer is polled once, with
/// a waker that relays to whichever task waker polled last; dropping the sleep disarms the relay, so
/// a stale entry wakes nobody.
pub struct Sleep {
    timer: Pin<Box<tokio::time::Sleep>>,
    relay: Option<Arc<Relay>>,
}

/// The waker handed to the runtime's timer: wakes the latest waker of the task awaiting the sleep.
#[derive(Default)]
struct Relay(Mutex<Option<Waker>>);

impl Wake for Relay {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref()
    }
    fn wake_by_ref(self: &Arc<Self>) {
        let waker = self.0.lock().expect("sleep relay lock").take();
        if let Some(waker) = waker {
            waker.wake();
        }
    }
}

impl Sleep {
    /// Whether the deadline has passed.
    pub fn is_elapsed(&self) -> bool {
        self.timer.is_elapsed()
    }
}

impl Future for Sleep {
    type Output = ();
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        match &self.relay {
            None => {
                let relay = Arc::new(Relay(Mutex::new(Some(cx.waker().clone()))));
                let waker = Waker::from(relay.clone());
                if self.timer.as_mut().poll(&mut Context::from_waker(&waker)).is_ready() {
                    return Poll::Ready(());
                }
                self.relay = Some(relay);
                Poll::Pending
            }
            Some(relay) => {
                // Store the waker before looking at the clock, so a timer firing in between (real
                // tokio's timer runs on another thread) finds a waker to wake.
                {
                    let mut slot = relay.0.lock().expect("sleep relay lock");
                    if !slot.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
                        *slot = Some(cx.waker().clone());
                    }
                }
                if self.timer.is_elapsed() {
                    return Poll::Ready(());
                }
                Poll::Pending
            }
        }
    }
}

impl Drop for Sleep {
    fn drop(&mut self) {
        if let Some(relay) = &self.relay {
            relay.0.lock().expect("sleep relay lock").take();
        }
    }
}

/// Spawn a task local to the current node (under madsim it dies with the node).
pub fn spawn<F>(future: F) -> tokio::task::JoinHandle<F::Output>
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    tokio::spawn(future)
}

/// Run `future` for at most `duration`. A `Send` future (madsim's own `timeout` is not `Send`).
pub fn timeout<F: Future>(duration: Duration, future: F) -> Timeout<F> {
    Timeout { future: Box::pin(future), sleep: sleep(duration) }
}

/// A uniformly random `u64` from the runtime's rng (seeded under madsim).
pub fn random_u64() -> u64 {
    NodeRng.next_u64()
}

/// Fill `buf` from the runtime's rng: key material and nonces (seeded, so reproducible, under
/// madsim; the OS-seeded CSPRNG `rand::thread_rng` in the daemon).
pub fn random_bytes(buf: &mut [u8]) {
    NodeRng.fill_bytes(buf);
}

/// A random duration in `[low, high]`, for jittered timers.
pub fn random_duration(low: Duration, high: Duration) -> Duration {
    if high <= low {
        return low;
    }
    let nanos = NodeRng.gen_range(low.as_nanos() as u64..=high.as_nanos() as u64);
    Duration::from_nanos(nanos)
}

/// The rng every random choice in the core draws from: madsim's seeded global rng under
/// `--cfg madsim`, the OS-seeded thread rng otherwise (madsim's std arm re-exports `rand`).
///
/// openraft's default runtime uses `rand::thread_rng()`, which madsim cannot control; that is why
/// [`Rt`] supplies this one.
#[derive(Debug, Default, Clone, Copy)]
pub struct NodeRng;

impl RngCore for NodeRng {
    fn next_u32(&mut self) -> u32 {
        madsim::rand::thread_rng().next_u32()
    }
    fn next_u64(&mut self) -> u64 {
        madsim::rand::thread_rng().next_u64()
    }
    fn fill_bytes(&mut self, dest: &mut [u8]) {
        madsim::rand::thread_rng().fill_bytes(dest)
    }
    fn try_fill_bytes(&mut self, dest: &mut [u8]) -> Result<(), rand::Error> {
        madsim::rand::thread_rng().try_fill_bytes(dest)
    }
}

/// The deadline of a [`timeout`] passed before the future finished.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("deadline elapsed")]
pub struct Elapsed;

/// The future returned by [`timeout`].
pub struct Timeout<F> {
    future: Pin<Box<F>>,
    sleep: Sleep,
}

impl<F: Future> Future for Timeout<F> {
    type Output = Result<F::Output, Elapsed>;
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        if let Poll::Ready(value) = self.future.as_mut().poll(cx) {
            return Poll::Ready(Ok(value));
        }
        if Pin::new(&mut self.sleep).poll(cx).is_ready() {
            return Poll::Ready(Err(Elapsed));
        }
        Poll::Pending
    }
}

fn until(deadline: Instant) -> Duration {
    deadline.saturating_duration_since(now())
}

/// openraft's runtime: the calls above, with our rng.
#[derive(Debug, Default, PartialEq, Eq, Clone, Copy)]
pub struct Rt;

impl AsyncRuntime for Rt {
    type JoinError = tokio::task::JoinError;
    type JoinHandle<T: OptionalSend + 'static> = tokio::task::JoinHandle<T>;
    type Sleep = Sleep;
    type Instant = TokioInstant;
    type TimeoutError = Elapsed;
    type Timeout<R, T: Future<Output = R> + OptionalSend> = Timeout<T>;
    type ThreadLocalRng = NodeRng;
    type OneshotSender<T: OptionalSend> = TokioOneShotSender<T>;
    type OneshotReceiver<T: OptionalSend> = tokio::sync::oneshot::Receiver<T>;
    type OneshotReceiverError = tokio::sync::oneshot::error::RecvError;

    fn spawn<T>(future: T) -> Self::JoinHandle<T::Output>
    where
        T: Future + OptionalSend + 'static,
        T::Output: OptionalSend + 'static,
    {
        tokio::spawn(future)
    }
    fn sleep(duration: Duration) -> Self::Sleep {
        sleep(duration)
    }
    fn sleep_until(deadline: Self::Instant) -> Self::Sleep {
        sleep(until(deadline))
    }
    fn timeout<R, F: Future<Output = R> + OptionalSend>(duration: Duration, future: F) -> Self::Timeout<R, F> {
        timeout(duration, future)
    }
    fn timeout_at<R, F: Future<Output = R> + OptionalSend>(deadline: Self::Instant, future: F) -> Self::Timeout<R, F> {
        timeout(until(deadline), future)
    }
    fn is_panic(error: &Self::JoinError) -> bool {
        error.is_panic()
    }
    fn thread_rng() -> Self::ThreadLocalRng {
        NodeRng
    }
    fn oneshot<T: OptionalSend>() -> (Self::OneshotSender<T>, Self::OneshotReceiver<T>) {
        let (tx, rx) = tokio::sync::oneshot::channel();
        (TokioOneShotSender(tx), rx)
    }
}
