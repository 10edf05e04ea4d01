//! The shared delivery control against DynamoDB (moto_server): the breaker's transitions are
//! conditional (two instances counting at once open it once; a success from an instance that
//! has not seen it open does not close it), one probe at a time, pauses only grow, and the rate
//! limit booked by concurrent callers never runs ahead of itself.

use crate::support::Aws;
use clayhook::delivery::control::dynamodb::DynamoDbDeliveryControl;
use clayhook::delivery::control::{
    Booking, BreakerPolicy, ControlState, DeliveryControl, Gate, RateLimit,
};
use clayhook::router::rules::DestinationName::{self, *};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

const POLICY: BreakerPolicy = BreakerPolicy {
    threshold: 3,
    cooldown: Duration::from_secs(30),
    max_cooldown: Duration::from_secs(300),
};

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

async fn read(c: &DynamoDbDeliveryControl, d: DestinationName) -> ControlState {
    c.read(&[d]).await.unwrap()[0].1
}

#[tokio::test]
async fn the_breaker_opens_once_probes_once_and_closes() {
    let aws = Aws::fresh().await;
    let a = DynamoDbDeliveryControl::new(aws.dynamodb.clone(), &aws.table);
    let b = DynamoDbDeliveryControl::new(aws.dynamodb.clone(), &aws.table);
    let now = now_ms();
    assert_eq!(read(&a, Slack).await, ControlState::default());
    assert!(!a.failed(Slack, &POLICY, now).await.unwrap().1);
    assert!(!b.failed(Slack, &POLICY, now).await.unwrap().1);
    // Two instances fail at once at the threshold: exactly one opens it.
    let (x, y) = tokio::join!(a.failed(Slack, &POLICY, now), b.failed(Slack, &POLICY, now));
    let (x, y) = (x.unwrap(), y.unwrap());
    assert_eq!(
        u32::from(x.1) + u32::from(y.1),
        1,
        "opened once: {x:?} {y:?}"
    );
    let open = read(&a, Slack).await;
    assert_eq!(open.opens, 1);
    assert_eq!(open.open_until_ms, now + 30_000);
    assert!(matches!(open.gate(&POLICY, now), Gate::Wait { .. }));
    // A success seen by an instance while it is open changes nothing.
    assert_eq!(a.succeeded(Slack, now).await.unwrap(), open);
    // Another destination is untouched.
    assert_eq!(read(&a, Zapier).await, ControlState::default());

    // After the cooldown: one probe. The second instance is told to wait for it.
    let later = now + 30_000;
    assert_eq!(open.gate(&POLICY, later), Gate::Probe);
    let took = a
        .take_probe(Slack, &POLICY, later, later + 5_000)
        .await
        .unwrap();
    assert!(took.is_ok());
    let lost = b
        .take_probe(Slack, &POLICY, later, later + 5_000)
        .await
        .unwrap();
    assert_eq!(lost.unwrap_err().probe_until_ms, later + 5_000);
    // The probe fails: reopened, for twice as long.
    let (state, opened) = a.failed(Slack, &POLICY, later + 100).await.unwrap();
    assert!(opened);
    assert_eq!(state.open_until_ms, later + 100 + 60_000);
    assert_eq!(state.opens, 2);
    // The next probe succeeds: closed and clean.
    let after = later + 100 + 60_000;
    assert!(
        b.take_probe(Slack, &POLICY, after, after + 5_000)
            .await
            .unwrap()
            .is_ok()
    );
    let closed = b.succeeded(Slack, after).await.unwrap();
    assert!(closed.is_clean(), "{closed:?}");
    assert_eq!(closed.gate(&POLICY, after), Gate::Pass);
}

#[tokio::test]
async fn a_pause_only_grows() {
    let aws = Aws::fresh().await;
    let c = DynamoDbDeliveryControl::new(aws.dynamodb.clone(), &aws.table);
    let now = now_ms();
    assert_eq!(
        c.pause(Crm, now + 10_000).await.unwrap().paused_until_ms,
        now + 10_000
    );
    assert_eq!(
        c.pause(Crm, now + 5_000).await.unwrap().paused_until_ms,
        now + 10_000
    );
    assert_eq!(read(&c, Crm).await.paused_until_ms, now + 10_000);
}

#[tokio::test]
async fn concurrent_bookings_keep_to_the_rate() {
    let aws = Aws::fresh().await;
    let limit = RateLimit {
        count: 10,
        per: Duration::from_secs(1),
        burst: 2,
    };
    let now = now_ms();
    // Two instances book 20 slots each, all at once, with a long enough wait allowed.
    let book = |c: DynamoDbDeliveryControl| async move {
        let mut sends = Vec::new();
        for _ in 0..20 {
            match c.book(Nurture, &limit, now, 10_000).await.unwrap() {
                Booking::SendAt(t) => sends.push(t),
                other => panic!("{other:?}"),
            }
        }
        sends
    };
    let (x, y) = tokio::join!(
        book(DynamoDbDeliveryControl::new(
            aws.dynamodb.clone(),
            &aws.table
        )),
        book(DynamoDbDeliveryControl::new(
            aws.dynamodb.clone(),
            &aws.table
        ))
    );
    let mut sends: Vec<i64> = x.into_iter().chain(y).collect();
    sends.sort();
    // The burst goes at once; then one slot every 100 ms, none shared.
    let expected: Vec<i64> = (0..40)
        .map(|i| now + (i64::from(i) - 1).max(0) * 100)
        .collect();
    assert_eq!(sends, expected);
    // The next slot is 3.9 s off: with at most 1 s of waiting, nothing is booked.
    assert_eq!(
        DynamoDbDeliveryControl::new(aws.dynamodb.clone(), &aws.table)
            .book(Nurture, &limit, now, 1_000)
            .await
            .unwrap(),
        Booking::TooFar {
            until_ms: now + 3_900 - 1_000
        }
    );
}

#[tokio::test]
async fn bookings_follow_the_algorithm_through_quiet_and_busy_spells() {
    // One instance's remembered arrival time picks the write it tries first; right or wrong,
    // every booking is the one the pure algorithm gives.
    let aws = Aws::fresh().await;
    let c = DynamoDbDeliveryControl::new(aws.dynamodb.clone(), &aws.table);
    let other = DynamoDbDeliveryControl::new(aws.dynamodb.clone(), &aws.table);
    let limit = RateLimit {
        count: 1,
        per: Duration::from_secs(1),
        burst: 2,
    };
    let t0 = now_ms();
    let mut tat = 0;
    // (offset, which instance): quiet start, a burst, busy, too far, a quiet gap, the other
    // instance making the first one's memory stale, then the first again.
    let steps = [
        (0, &c),
        (10, &c),
        (20, &c),
        (30, &c),
        (40, &c),
        (9_000, &c),
        (9_010, &other),
        (9_020, &other),
        (9_030, &c),
        (30_000, &c),
    ];
    for (offset, instance) in steps {
        let now = t0 + offset;
        let (expected, next) = clayhook::delivery::control::book(tat, &limit, now, 2_000);
        tat = next;
        assert_eq!(
            instance.book(Nurture, &limit, now, 2_000).await.unwrap(),
            expected,
            "at +{offset} ms"
        );
    }
}
