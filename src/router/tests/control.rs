//! The router with the shared delivery control in memory: the breaker opens within its
//! threshold and holds only its destination, held records wait without counting a failure, one
//! probe closes it, and a 429 pauses the destination for the rest of the batch.

use super::*;
use crate::delivery::control::config::ControlSettings;
use crate::delivery::control::{
    Booking, BreakerPolicy, ControlError, ControlState, RateLimit, book,
};

/// The control store's contract in memory, with the same decisions as the DynamoDB adapter.
#[derive(Default)]
struct MemoryControl {
    states: Mutex<HashMap<DestinationName, ControlState>>,
    /// Left out of every read, as keys DynamoDB keeps leaving unprocessed.
    unread: Mutex<Vec<DestinationName>>,
}

impl MemoryControl {
    fn state(&self, d: DestinationName) -> ControlState {
        self.states
            .lock()
            .unwrap()
            .get(&d)
            .copied()
            .unwrap_or_default()
    }
    fn set(&self, d: DestinationName, s: ControlState) {
        self.states.lock().unwrap().insert(d, s);
    }
}

impl DeliveryControl for MemoryControl {
    fn enabled(&self) -> bool {
        true
    }
    async fn read(
        &self,
        ds: &[DestinationName],
    ) -> Result<Vec<(DestinationName, ControlState)>, ControlError> {
        let unread = self.unread.lock().unwrap().clone();
        Ok(ds
            .iter()
            .filter(|d| !unread.contains(d))
            .map(|d| (*d, self.state(*d)))
            .collect())
    }
    async fn failed(
        &self,
        d: DestinationName,
        policy: &BreakerPolicy,
        now_ms: i64,
    ) -> Result<(ControlState, bool), ControlError> {
        let mut s = self.state(d);
        s.failures += 1;
        let opened = s.should_open(policy, now_ms);
        if opened {
            s.opens += 1;
            s.open_until_ms = now_ms + policy.cooldown_for(s.opens).as_millis() as i64;
            s.probe_until_ms = 0;
        }
        self.set(d, s);
        Ok((s, opened))
    }
    async fn succeeded(
        &self,
        d: DestinationName,
        now_ms: i64,
    ) -> Result<ControlState, ControlError> {
        let mut s = self.state(d);
        if s.open_until_ms <= now_ms {
            s.failures = 0;
            s.opens = 0;
            s.probe_until_ms = 0;
            self.set(d, s);
        }
        Ok(s)
    }
    async fn take_probe(
        &self,
        d: DestinationName,
        policy: &BreakerPolicy,
        now_ms: i64,
        until_ms: i64,
    ) -> Result<Result<ControlState, ControlState>, ControlError> {
        let mut s = self.state(d);
        if s.gate(policy, now_ms) != Gate::Probe {
            return Ok(Err(s));
        }
        s.probe_until_ms = until_ms;
        self.set(d, s);
        Ok(Ok(s))
    }
    async fn pause(&self, d: DestinationName, until_ms: i64) -> Result<ControlState, ControlError> {
        let mut s = self.state(d);
        s.paused_until_ms = s.paused_until_ms.max(until_ms);
        self.set(d, s);
        Ok(s)
    }
    async fn book(
        &self,
        d: DestinationName,
        limit: &RateLimit,
        now_ms: i64,
        max_wait_ms: i64,
    ) -> Result<Booking, ControlError> {
        let mut s = self.state(d);
        let (booking, tat) = book(s.tat_ms, limit, now_ms, max_wait_ms);
        s.tat_ms = tat;
        self.set(d, s);
        Ok(booking)
    }
}

const POLICY: BreakerPolicy = BreakerPolicy {
    threshold: 3,
    cooldown: Duration::from_secs(60),
    max_cooldown: Duration::from_secs(600),
};

fn controlled() -> Router<MemoryLedger, ScriptedDestinations, MemoryRedelivery, MemoryControl> {
    let mut settings = router().settings;
    settings.control = ControlSettings {
        breaker: Some(POLICY),
        limits: Vec::new(),
        max_wait: Duration::from_secs(5),
        ..ControlSettings::default()
    };
    // One request per receive keeps the counting plain.
    settings.retry.max_attempts = 1;
    Router {
        settings,
        ledger: MemoryLedger::default(),
        destinations: ScriptedDestinations::default(),
        redelivery: MemoryRedelivery::default(),
        control: MemoryControl::default(),
    }
}

/// 60 to 79: nurture and zapier.
const WARM: &str = r#"{"email":"w@b.co","icp_score":65}"#;

fn warm(i: usize) -> Envelope {
    envelope(&format!("warm{i}"), WARM, 1_000)
}

fn ledger_failures(
    r: &Router<MemoryLedger, ScriptedDestinations, MemoryRedelivery, MemoryControl>,
    env: &Envelope,
    d: DestinationName,
) -> u32 {
    r.ledger
        .items
        .lock()
        .unwrap()
        .get(&(env.id.clone(), d))
        .map_or(0, |(i, _)| i.failures)
}

#[tokio::test(start_paused = true)]
async fn the_breaker_opens_at_its_threshold_and_holds_only_its_destination() {
    let mut r = controlled();
    r.settings.concurrency = 1;
    r.destinations.script(Nurture, vec![status(503, None); 50]);
    let leads: Vec<Envelope> = (0..10).map(warm).collect();
    let records = leads
        .iter()
        .enumerate()
        .map(|(i, e)| received(&format!("m{i}"), e, 1))
        .collect();
    let failed_ids = failed(&r, records).await;
    assert_eq!(failed_ids.len(), 10, "every record still owes nurture");
    // Nurture was tried until the breaker opened: the threshold, not ten.
    assert_eq!(r.destinations.calls(Nurture).len(), 3);
    assert!(r.control.state(Nurture).open_until_ms > epoch_ms(SystemTime::now()));
    // Zapier, on the same records, got every one.
    assert_eq!(r.destinations.calls(Zapier).len(), 10);
    // The three that failed count one failure each; the seven held count none. The two that
    // failed before it opened wait the schedule's first step; the rest wait for the breaker
    // (its 60 s cooldown, plus some jitter).
    let counted: u32 = leads.iter().map(|e| ledger_failures(&r, e, Nurture)).sum();
    assert_eq!(counted, 3);
    let delays = r.redelivery.delays.lock().unwrap().clone();
    assert_eq!(delays.len(), 10);
    let waits: Vec<Duration> = delays.iter().map(|(_, w)| *w).collect();
    assert_eq!(waits[..2], [Duration::from_secs(30); 2], "{delays:?}");
    assert!(
        waits[2..]
            .iter()
            .all(|w| *w >= Duration::from_secs(55) && *w <= Duration::from_secs(70)),
        "{delays:?}"
    );
    assert!(r.redelivery.letters.lock().unwrap().is_empty());
}

#[tokio::test(start_paused = true)]
async fn held_receives_do_not_use_up_the_retry_schedule() {
    let r = controlled();
    let env = warm(1);
    r.control.set(
        Nurture,
        ControlState {
            failures: 3,
            opens: 1,
            open_until_ms: epoch_ms(SystemTime::now()) + 3_600_000,
            ..ControlState::default()
        },
    );
    // Receive after receive far past the schedule's 18: held each time, never dead-lettered.
    for receive in 1..=40 {
        assert_eq!(
            failed(&r, vec![received("m1", &env, receive)]).await,
            ["m1"]
        );
    }
    assert!(r.redelivery.letters.lock().unwrap().is_empty());
    assert_eq!(r.destinations.calls(Nurture).len(), 0);
    assert_eq!(ledger_failures(&r, &env, Nurture), 0);
}

#[tokio::test(start_paused = true)]
async fn near_the_queues_receive_limit_a_held_record_goes_back_fresh() {
    let mut r = controlled();
    r.settings.max_receive_count = Some(30);
    let env = warm(2);
    r.control.set(
        Nurture,
        ControlState {
            failures: 3,
            open_until_ms: epoch_ms(SystemTime::now()) + 600_000,
            ..ControlState::default()
        },
    );
    assert_eq!(failed(&r, vec![received("m1", &env, 28)]).await, ["m1"]);
    assert!(r.redelivery.requeued.lock().unwrap().is_empty());
    assert!(
        failed(&r, vec![received("m1", &env, 29)]).await.is_empty(),
        "sent back as a new message, so this one is deleted"
    );
    let requeued = r.redelivery.requeued.lock().unwrap().clone();
    assert_eq!(requeued.len(), 1);
    assert_eq!(Envelope::parse(&requeued[0].0).unwrap().id, env.id);
}

#[tokio::test(start_paused = true)]
async fn half_open_lets_one_probe_through_and_its_success_closes_the_breaker() {
    let mut r = controlled();
    r.settings.concurrency = 1;
    let past = epoch_ms(SystemTime::now()) - 1;
    r.control.set(
        Nurture,
        ControlState {
            failures: 3,
            opens: 2,
            open_until_ms: past,
            ..ControlState::default()
        },
    );
    let leads: Vec<Envelope> = (0..4).map(warm).collect();
    let records: Vec<SqsMessage> = leads
        .iter()
        .enumerate()
        .map(|(i, e)| received(&format!("m{i}"), e, 1))
        .collect();
    let failed_ids = failed(&r, records).await;
    // The first record probes and succeeds: closed, and the rest go straight through.
    assert!(failed_ids.is_empty(), "{failed_ids:?}");
    assert_eq!(r.destinations.calls(Nurture).len(), 4);
    assert!(r.control.state(Nurture).is_clean());

    // A failed probe reopens it, for twice as long as the opening before.
    let r = controlled();
    r.control.set(
        Nurture,
        ControlState {
            failures: 3,
            opens: 1,
            open_until_ms: past,
            ..ControlState::default()
        },
    );
    r.destinations.script(Nurture, vec![status(503, None)]);
    failed(&r, vec![received("p", &warm(9), 1)]).await;
    let s = r.control.state(Nurture);
    assert_eq!(s.opens, 2);
    let left = s.open_until_ms - epoch_ms(SystemTime::now());
    assert!((110_000..=120_000).contains(&left), "{left}");
}

#[tokio::test(start_paused = true)]
async fn a_429_with_retry_after_pauses_the_destination_for_the_rest_of_the_batch() {
    let mut r = controlled();
    r.settings.concurrency = 1;
    r.destinations
        .script(Zapier, vec![status(429, Some(RetryAfter::Seconds(120)))]);
    let records: Vec<SqsMessage> = (0..3)
        .map(|i| received(&format!("m{i}"), &warm(i), 1))
        .collect();
    let failed_ids = failed(&r, records).await;
    assert_eq!(failed_ids.len(), 3);
    assert_eq!(
        r.destinations.calls(Zapier).len(),
        1,
        "the others were paused"
    );
    assert_eq!(r.destinations.calls(Nurture).len(), 3);
    let paused = r.control.state(Zapier).paused_until_ms - epoch_ms(SystemTime::now());
    assert!((115_000..=120_000).contains(&paused), "{paused}");
    // A 429 is no breaker failure.
    assert_eq!(r.control.state(Zapier).failures, 0);
}

#[tokio::test(start_paused = true)]
async fn a_429_without_retry_after_pauses_briefly_and_never_opens_the_breaker() {
    let mut r = controlled();
    r.settings.concurrency = 1;
    r.settings.control.breaker = Some(BreakerPolicy {
        threshold: 1,
        ..BreakerPolicy::default()
    });
    r.destinations.script(Zapier, vec![status(429, None); 10]);
    failed(&r, vec![received("m0", &warm(0), 1)]).await;
    let s = r.control.state(Zapier);
    assert_eq!((s.failures, s.opens), (0, 0), "{s:?}");
    let paused = s.paused_until_ms - epoch_ms(SystemTime::now());
    let expected = crate::router::gates::PAUSE_WITHOUT_RETRY_AFTER.as_millis() as i64;
    assert!((expected - 5_000..=expected).contains(&paused), "{paused}");
}

#[tokio::test(start_paused = true)]
async fn a_rate_limit_booked_far_ahead_holds_the_record_on_the_queue() {
    let mut r = controlled();
    r.settings.control.limits = vec![(
        Nurture,
        RateLimit {
            count: 1,
            per: Duration::from_secs(10),
            burst: 1,
        },
    )];
    r.settings.control.max_wait = Duration::from_secs(5);
    r.settings.concurrency = 1;
    let records: Vec<SqsMessage> = (0..2)
        .map(|i| received(&format!("m{i}"), &warm(i), 1))
        .collect();
    // The first takes the slot; the second's is 10 s off, past the 5 s it may wait in line.
    assert_eq!(failed(&r, records).await, ["m1"]);
    assert_eq!(r.destinations.calls(Nurture).len(), 1);
    let delays = r.redelivery.delays.lock().unwrap().clone();
    assert_eq!(delays.len(), 1);
    assert!(delays[0].1 >= Duration::from_secs(4), "{delays:?}");
    assert_eq!(ledger_failures(&r, &warm(1), Nurture), 0);
}

/// A vendor asking for a year (seconds, or a date in 2099) pauses its destination for at most
/// `MAX_VENDOR_WAIT`; a pause already stored for longer is read back within the same bound.
#[tokio::test(start_paused = true)]
async fn a_retry_after_of_a_year_pauses_at_most_the_vendor_bound() {
    let year = RetryAfter::Seconds(31_536_000);
    let in_2099 = RetryAfter::At(UNIX_EPOCH + Duration::from_secs(4_070_908_800));
    for retry_after in [year, in_2099] {
        let mut r = controlled();
        r.settings.concurrency = 1;
        r.destinations
            .script(Zapier, vec![status(429, Some(retry_after))]);
        let failed_ids = failed(&r, vec![received("m0", &warm(0), 1)]).await;
        assert_eq!(failed_ids, ["m0"]);
        let bound = r.settings.control.max_vendor_wait.as_millis() as i64;
        assert_eq!(bound, 3_600_000, "the default bound is an hour");
        let paused = r.control.state(Zapier).paused_until_ms - epoch_ms(SystemTime::now());
        assert!((bound - 5_000..=bound).contains(&paused), "{paused}");
        // The record comes back within the bound (and the schedule's first step), not in a year.
        let delays = r.redelivery.delays.lock().unwrap().clone();
        assert_eq!(delays.len(), 1);
        assert!(delays[0].1 <= Duration::from_secs(3_600), "{delays:?}");
    }
    // A pause stored for a year (by an older version) holds no longer than the bound either.
    let r = controlled();
    r.control.set(
        Zapier,
        ControlState {
            paused_until_ms: epoch_ms(SystemTime::now()) + 31_536_000_000,
            ..ControlState::default()
        },
    );
    r.destinations.script(Nurture, vec![Attempt::Delivered]);
    assert_eq!(failed(&r, vec![received("m1", &warm(1), 1)]).await, ["m1"]);
    let delays = r.redelivery.delays.lock().unwrap().clone();
    assert_eq!(delays.len(), 1);
    assert!(delays[0].1 <= Duration::from_secs(3_600 + 5), "{delays:?}");
}

/// Held work has an end: a lead still owed once `RETRY_SCHEDULE_TOTAL` has passed since ingest
/// accepted it goes to the DLQ with the reason (which destination, held by what), though its
/// receives were only holds and counted no failure; a failing one likewise, before its steps
/// are used up. A redrive starts the clock again.
#[tokio::test(start_paused = true)]
async fn a_lead_owed_past_the_schedules_total_reaches_the_dlq_with_what_held_it() {
    let r = controlled();
    let day = r.settings.schedule.total();
    r.control.set(
        Nurture,
        ControlState {
            failures: 3,
            opens: 1,
            open_until_ms: epoch_ms(SystemTime::now()) + 600_000,
            ..ControlState::default()
        },
    );
    r.destinations.script(Zapier, vec![Attempt::Delivered; 3]);
    let old = envelope_at(
        "old",
        WARM,
        SystemTime::now() - day - Duration::from_secs(1),
    );
    let recent = envelope_at(
        "recent",
        WARM,
        SystemTime::now() - day + Duration::from_secs(60),
    );
    let mut redriven = old.clone();
    redriven.redriven_at_ms = Some(epoch_ms(SystemTime::now()));
    let records = vec![
        received("old", &old, 2),
        received("recent", &recent, 2),
        received("redriven", &redriven, 1),
    ];
    let mut failed_ids = failed(&r, records).await;
    failed_ids.sort();
    assert_eq!(
        failed_ids,
        ["recent", "redriven"],
        "the old one is dead-lettered"
    );
    let letters = r.redelivery.letters.lock().unwrap().clone();
    assert_eq!(letters.len(), 1, "{letters:?}");
    let (id, reason, _) = &letters[0];
    assert_eq!(id, "old");
    assert_eq!(
        reason,
        &format!(
            "still owed {} s after it was accepted (RETRY_SCHEDULE_TOTAL): nurture: breaker_open",
            day.as_secs()
        )
    );
    assert_eq!(
        ledger_failures(&r, &old, Nurture),
        0,
        "no failure was counted"
    );
    // The recent one, a minute short of its end, waits that minute, not the breaker's 10.
    let delays = r.redelivery.delays.lock().unwrap().clone();
    let recent_wait = delays
        .iter()
        .find(|(h, _)| h.starts_with("rh-recent"))
        .map(|(_, w)| *w)
        .unwrap();
    assert!(recent_wait <= Duration::from_secs(60), "{delays:?}");

    // Failing, not held: the same end, before the schedule's steps are used up.
    let r = controlled();
    r.destinations.script(Nurture, vec![status(503, None)]);
    r.destinations.script(Zapier, vec![Attempt::Delivered]);
    assert!(failed(&r, vec![received("old", &old, 1)]).await.is_empty());
    let letters = r.redelivery.letters.lock().unwrap().clone();
    assert!(
        letters[0]
            .1
            .ends_with("(RETRY_SCHEDULE_TOTAL): nurture: answered 503"),
        "{letters:?}"
    );
}

/// A destination whose state could not be read (its key left unprocessed under throttling) is
/// held, not sent to as if its breaker were closed; the others go on; nothing counts a failure.
#[tokio::test(start_paused = true)]
async fn a_destination_whose_state_was_not_read_is_held_not_read_as_closed() {
    let r = controlled();
    // Its breaker is open, but the read does not return it.
    r.control.set(
        Nurture,
        ControlState {
            failures: 3,
            opens: 1,
            open_until_ms: epoch_ms(SystemTime::now()) + 600_000,
            ..ControlState::default()
        },
    );
    r.control.unread.lock().unwrap().push(Nurture);
    r.destinations.script(Nurture, vec![Attempt::Delivered]);
    r.destinations.script(Zapier, vec![Attempt::Delivered]);
    let env = warm(7);
    assert_eq!(failed(&r, vec![received("m1", &env, 1)]).await, ["m1"]);
    assert!(
        r.destinations.calls(Nurture).is_empty(),
        "nothing sent into it"
    );
    assert_eq!(r.destinations.calls(Zapier).len(), 1);
    assert_eq!(ledger_failures(&r, &env, Nurture), 0);
    let delays = r.redelivery.delays.lock().unwrap().clone();
    assert!(
        delays[0].1 >= crate::router::gates::UNREAD_HOLD
            && delays[0].1 <= crate::router::gates::UNREAD_HOLD + Duration::from_secs(1),
        "{delays:?}"
    );
}
