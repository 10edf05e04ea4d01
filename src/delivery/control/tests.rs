use super::config::{ControlSettings, parse_rate_limits_with_off};
use super::*;
use crate::config::env_of;

const POLICY: BreakerPolicy = BreakerPolicy {
    threshold: 3,
    cooldown: Duration::from_secs(10),
    max_cooldown: Duration::from_secs(60),
};

#[test]
fn the_breaker_opens_at_the_threshold_then_half_opens_for_one_probe() {
    let mut s = ControlState::default();
    assert_eq!(s.gate(&POLICY, 0), Gate::Pass);
    s.failures = 2;
    assert!(!s.should_open(&POLICY, 0));
    s.failures = 3;
    assert!(s.should_open(&POLICY, 0));
    s.open_until_ms = 10_000;
    assert!(!s.should_open(&POLICY, 5_000), "already open");
    assert_eq!(
        s.gate(&POLICY, 5_000),
        Gate::Wait {
            until_ms: 10_000,
            held: Held::Open
        }
    );
    assert_eq!(
        s.gate(&POLICY, 10_000),
        Gate::Probe,
        "half-open after the cooldown"
    );
    s.probe_until_ms = 12_000;
    assert_eq!(
        s.gate(&POLICY, 11_000),
        Gate::Wait {
            until_ms: 12_000,
            held: Held::Probing
        },
        "another instance's probe is out"
    );
    assert_eq!(
        s.gate(&POLICY, 12_000),
        Gate::Probe,
        "a probe that died lapses"
    );
    s.paused_until_ms = 20_000;
    assert_eq!(
        s.gate(&POLICY, 12_000),
        Gate::Wait {
            until_ms: 20_000,
            held: Held::Paused
        }
    );
}

#[test]
fn each_reopening_doubles_the_cooldown_up_to_the_ceiling() {
    let got: Vec<u64> = (1..=5).map(|o| POLICY.cooldown_for(o).as_secs()).collect();
    assert_eq!(got, [10, 20, 40, 60, 60]);
    assert_eq!(POLICY.cooldown_for(0).as_secs(), 10);
    assert_eq!(POLICY.cooldown_for(u32::MAX).as_secs(), 60);
}

#[test]
fn gcra_books_a_burst_then_the_sustained_rate() {
    let limit = RateLimit {
        count: 10,
        per: Duration::from_secs(1),
        burst: 3,
    };
    assert_eq!((limit.interval_ms(), limit.tolerance_ms()), (100, 200));
    let mut tat = 0;
    let mut sends = Vec::new();
    for _ in 0..6 {
        let (b, next) = book(tat, &limit, 1_000, 10_000);
        tat = next;
        sends.push(b);
    }
    // Three at once (the burst), then one every 100 ms.
    assert_eq!(
        sends,
        [1_000, 1_000, 1_000, 1_100, 1_200, 1_300].map(Booking::SendAt)
    );
    // No more than 300 ms of waiting allowed: the next slot (1,400) is too far from 1,000.
    let (b, unchanged) = book(tat, &limit, 1_000, 300);
    assert_eq!(b, Booking::TooFar { until_ms: 1_100 });
    assert_eq!(unchanged, tat);
    // After a quiet spell the burst is back.
    assert_eq!(book(tat, &limit, 60_000, 0).0, Booking::SendAt(60_000));
}

#[test]
fn over_any_window_gcra_sends_at_most_burst_plus_rate_times_window() {
    // HubSpot's default: 9/s, burst 10 -> never more than 100 in 10 s.
    let limit = RateLimit {
        count: 9,
        per: Duration::from_secs(1),
        burst: 10,
    };
    let mut tat = 0;
    let mut sends = Vec::new();
    let mut now = 0;
    while sends.len() < 500 {
        match book(tat, &limit, now, 0) {
            (Booking::SendAt(t), next) => {
                sends.push(t);
                tat = next;
            }
            (Booking::TooFar { .. }, _) => now += 7,
        }
    }
    for (i, start) in sends.iter().enumerate() {
        let in_window = sends[i..]
            .iter()
            .take_while(|t| **t < start + 10_000)
            .count();
        assert!(
            in_window <= 100,
            "{in_window} sends in the 10 s from {start}"
        );
    }
}

#[test]
fn rate_limits_parse_with_defaults_and_overrides() {
    let parsed =
        parse_rate_limits_with_off("crm=90/10s:10, slack=1/s, zapier=off, nurture=600/m").unwrap();
    assert_eq!(
        parsed[0],
        (
            DestinationName::Crm,
            Some(RateLimit {
                count: 90,
                per: Duration::from_secs(10),
                burst: 10
            })
        )
    );
    assert_eq!(parsed[2], (DestinationName::Zapier, None));
    assert_eq!(parsed[3].1.unwrap().per, Duration::from_secs(60));
    for bad in [
        "crm",
        "crm=0/s",
        "crm=1/x",
        "crm=1/s:0",
        "mailchimp=1/s",
        "slack=1/s,slack=2/s",
    ] {
        assert!(parse_rate_limits_with_off(bad).is_err(), "{bad}");
    }

    let defaults = ControlSettings::read(&env_of(&[])).unwrap();
    assert_eq!(defaults.breaker, Some(BreakerPolicy::default()));
    assert_eq!(
        defaults
            .limit(DestinationName::Slack)
            .unwrap()
            .interval_ms(),
        1_000
    );
    assert_eq!(defaults.limit(DestinationName::Crm).unwrap().burst, 10);
    assert!(defaults.limit(DestinationName::Nurture).is_none());

    let set = ControlSettings::read(&env_of(&[
        ("DESTINATION_RATE_LIMITS", "slack=off,nurture=5/s"),
        ("BREAKER_THRESHOLD", "0"),
    ]))
    .unwrap();
    assert!(set.breaker.is_none());
    assert!(set.limit(DestinationName::Slack).is_none());
    assert_eq!(set.limit(DestinationName::Nurture).unwrap().count, 5);
    assert!(
        set.limit(DestinationName::Zapier).is_some(),
        "defaults kept"
    );

    // A rate the millisecond slots cannot pace is refused by name, never floored to 1000/s.
    let err = ControlSettings::read(&env_of(&[("DESTINATION_RATE_LIMITS", "zapier=2000/s")]))
        .unwrap_err();
    assert!(
        err.to_string().contains("DESTINATION_RATE_LIMITS")
            && err
                .to_string()
                .contains("more than 1000 requests per second"),
        "{err}"
    );
    // Nor is a rate the rounding would slow by more than 1% (600/s would run at 500/s).
    for slowed in ["zapier=600/s", "zapier=999/s", "zapier=1500/2s"] {
        let err = parse_rate_limits_with_off(slowed).unwrap_err();
        assert!(err.contains("more than 1% under"), "{slowed}: {err}");
    }
    for fine in [
        "zapier=500/s",
        "zapier=90/10s",
        "zapier=9/s:10",
        "zapier=600/m",
    ] {
        assert!(parse_rate_limits_with_off(fine).is_ok(), "{fine}");
    }
    let fastest = parse_rate_limits_with_off("zapier=1000/s").unwrap();
    assert_eq!(fastest[0].1.unwrap().interval_ms(), 1);
    // Rounded up, so the pace stays at or under the limit: 3/s is one per 334 ms.
    let third = parse_rate_limits_with_off("zapier=3/s").unwrap();
    assert_eq!(third[0].1.unwrap().interval_ms(), 334);

    let err = ControlSettings::read(&env_of(&[("BREAKER_COOLDOWN", "soon")])).unwrap_err();
    assert!(err.to_string().contains("BREAKER_COOLDOWN"), "{err}");
}
