//! `SubscriptionActor` against the in-memory control plane, embedded logs in a temporary
//! directory and a scripted callback: no Raft, no sockets.

use std::collections::BTreeMap;
use std::time::Duration;

use eventgate_raft_store::Command;
use ractor::Actor;

use super::*;
use crate::control::MemoryControl;
use crate::testing::{
    context, cursors, settings, subscribe, wait_until, PartitionedBroker, Reply, ScriptedCallback,
};

async fn start(ctx: DeliveryContext, subscription: Subscription) -> ActorRef<SubscriptionMsg> {
    let (actor, _) = Actor::spawn(
        None,
        SubscriptionActor,
        SubscriptionArgs { ctx, subscription },
    )
    .await
    .unwrap();
    actor
}

async fn publish(broker: &PartitionedBroker, partition: u32, range: std::ops::Range<u64>) {
    for i in range {
        broker
            .publish_to("orders", partition, format!("m{i}"))
            .await;
    }
}

fn offsets(seen: &[crate::testing::Seen], partition: u32) -> Vec<u64> {
    seen.iter()
        .filter_map(|s| s.position)
        .filter(|(p, _)| *p == partition)
        .map(|(_, o)| o)
        .collect()
}

#[tokio::test]
async fn window_one_delivers_in_strict_order_one_at_a_time() {
    let control = MemoryControl::new(1);
    let broker = PartitionedBroker::new(1);
    let callback = ScriptedCallback::new(|_| Reply::Slow(200, Duration::from_millis(2)));
    let ctx = context(&control, 1, broker.clone(), callback.clone(), settings(1));
    let sub = subscribe(&control, broker.as_ref(), "s1", "orders", 1).await;
    publish(&broker, 0, 0..20).await;
    let actor = start(ctx.clone(), sub).await;
    wait_until("20 deliveries", || ctx.metrics.delivered.get() == 20).await;

    let seen = callback.deliveries();
    assert_eq!(offsets(&seen, 0), (0..20).collect::<Vec<_>>());
    assert_eq!(
        callback.most_in_flight(),
        1,
        "window 1: one request at a time"
    );
    for (i, s) in seen.iter().enumerate() {
        assert_eq!(s.body, format!("m{i}").as_bytes());
        assert_eq!(s.attempt, Some(1));
        assert_eq!(s.url, "http://subscriber.test/s1");
    }
    ctx.cursors.flush().await;
    assert_eq!(cursors(&control, "s1")[&0], 20);
    actor.stop_and_wait(None, None).await.unwrap();
}

#[tokio::test]
async fn window_n_dispatches_in_order_per_partition_and_commits_only_the_completed_prefix() {
    let control = MemoryControl::new(1);
    let broker = PartitionedBroker::new(2);
    // The first message of partition 0 hangs until the test opens the gate; the rest answer.
    let callback = ScriptedCallback::new(|s| match s.position {
        Some((0, 0)) => Reply::Gated,
        _ => Reply::Slow(200, Duration::from_millis(1)),
    });
    let ctx = context(&control, 1, broker.clone(), callback.clone(), settings(4));
    let sub = subscribe(&control, broker.as_ref(), "s1", "orders", 1).await;
    publish(&broker, 0, 0..12).await;
    publish(&broker, 1, 0..12).await;
    let actor = start(ctx.clone(), sub).await;

    // Partition 1 runs through; on partition 0 the rest of the window goes on past the hung
    // head (at most 4 in flight), but the cursor stays before it.
    wait_until("all but the hung head delivered", || {
        ctx.metrics.delivered.get() == 23
    })
    .await;
    ctx.cursors.flush().await;
    let committed = cursors(&control, "s1");
    assert_eq!(committed[&1], 12);
    assert_eq!(
        committed[&0], 0,
        "the cursor may not pass a message still in flight"
    );

    callback.open_gate();
    wait_until("the head delivered", || ctx.metrics.delivered.get() == 24).await;
    let seen = callback.deliveries();
    for partition in [0, 1] {
        assert_eq!(
            offsets(&seen, partition),
            (0..12).collect::<Vec<_>>(),
            "dispatch order of partition {partition}"
        );
    }
    assert!(callback.most_in_flight() > 1, "window 4 overlaps requests");
    ctx.cursors.flush().await;
    assert_eq!(cursors(&control, "s1")[&0], 12);
    actor.stop_and_wait(None, None).await.unwrap();
}

#[tokio::test]
async fn failures_are_retried_on_the_schedule_and_the_schedule_is_replicated() {
    let control = MemoryControl::new(1);
    let broker = PartitionedBroker::new(1);
    let callback = ScriptedCallback::new(|s| match (s.position, s.attempt) {
        (Some((0, 0)), Some(1 | 2)) => Reply::Status(503),
        _ => Reply::Status(200),
    });
    let ctx = context(&control, 1, broker.clone(), callback.clone(), settings(1));
    let sub = subscribe(&control, broker.as_ref(), "s1", "orders", 1).await;
    publish(&broker, 0, 0..2).await;
    let actor = start(ctx.clone(), sub).await;
    wait_until("both delivered", || {
        callback
            .deliveries()
            .iter()
            .filter(|s| s.position == Some((0, 1)))
            .count()
            == 1
    })
    .await;

    let seen = callback.deliveries();
    let attempts: Vec<_> = seen.iter().map(|s| (s.position, s.attempt)).collect();
    assert_eq!(
        attempts,
        vec![
            (Some((0, 0)), Some(1)),
            (Some((0, 0)), Some(2)),
            (Some((0, 0)), Some(3)),
            (Some((0, 1)), Some(1)),
        ],
        "the head is retried until it succeeds, and only then the next goes"
    );
    let crate::subscription::RetryPolicy::Exponential { base, max } = settings(1).retry else {
        panic!("the tests' settings retry exponentially");
    };
    for (k, pair) in seen.windows(2).take(2).enumerate() {
        // Equal jitter: at least half of the exponential step.
        let step = base.saturating_mul(1 << k).min(max);
        assert!(
            pair[1].at - pair[0].at >= step / 2,
            "attempt {} came {:?} after attempt {}",
            k + 2,
            pair[1].at - pair[0].at,
            k + 1
        );
    }
    // The schedule went through the log: attempt 1, attempt 2, then cleared on success.
    let schedules: Vec<Vec<(u64, u32)>> = control
        .written()
        .into_iter()
        .filter_map(|(_, c)| match c {
            Command::SetRetries { entries, .. } => {
                Some(entries.iter().map(|e| (e.offset, e.attempt)).collect())
            }
            _ => None,
        })
        .collect();
    assert_eq!(schedules, vec![vec![(0, 1)], vec![(0, 2)], vec![]]);
    assert_eq!(ctx.metrics.retries.get(), 2);
    assert_eq!(ctx.metrics.failures.get(), 2);
    assert_eq!(ctx.metrics.delivered.get(), 2);
    actor.stop_and_wait(None, None).await.unwrap();
}

#[tokio::test]
async fn gone_ends_the_subscription() {
    let control = MemoryControl::new(1);
    let broker = PartitionedBroker::new(1);
    let callback = ScriptedCallback::new(|_| Reply::Status(410));
    let ctx = context(&control, 1, broker.clone(), callback.clone(), settings(1));
    let sub = subscribe(&control, broker.as_ref(), "s1", "orders", 1).await;
    publish(&broker, 0, 0..3).await;
    let actor = start(ctx.clone(), sub).await;
    wait_until("the subscription removed", || {
        control
            .reader()
            .read(|s| !s.subscriptions.contains_key("s1"))
    })
    .await;
    assert_eq!(callback.deliveries().len(), 1, "410 is not retried");
    assert!(control.written().iter().any(
        |(node, c)| *node == 1 && matches!(c, Command::RemoveSubscription { id } if id == "s1")
    ));
    assert!(cursors(&control, "s1").is_empty());
    actor.stop_and_wait(None, None).await.unwrap();
    assert_eq!(callback.deliveries().len(), 1);
}

#[tokio::test]
async fn a_message_failing_max_attempts_times_is_dead_lettered_and_the_cursor_moves_on() {
    let control = MemoryControl::new(1);
    let broker = PartitionedBroker::new(1);
    let callback = ScriptedCallback::new(|s| match s.position {
        Some((0, 0)) => Reply::Status(500),
        _ => Reply::Status(200),
    });
    let mut s = settings(1);
    s.max_attempts = 3;
    let ctx = context(&control, 1, broker.clone(), callback.clone(), s);
    let sub = subscribe(&control, broker.as_ref(), "s1", "orders", 1).await;
    publish(&broker, 0, 0..2).await;
    let actor = start(ctx.clone(), sub).await;
    wait_until("the second message delivered", || {
        ctx.metrics.delivered.get() == 1
    })
    .await;

    let letter = control
        .reader()
        .read(|s| s.dead_letters.get(&("s1".to_owned(), 0, 0)).cloned());
    let letter = letter.expect("dead letter recorded");
    assert_eq!(letter.attempts, 3);
    assert_eq!(letter.last_error, "callback answered 500");
    assert_eq!(offsets(&callback.deliveries(), 0), vec![0, 0, 0, 1]);
    ctx.cursors.flush().await;
    assert_eq!(cursors(&control, "s1")[&0], 2);
    assert_eq!(ctx.metrics.dead_letters.get(), 1);
    actor.stop_and_wait(None, None).await.unwrap();
}

#[tokio::test]
async fn a_message_failing_past_max_age_is_dead_lettered() {
    let control = MemoryControl::new(1);
    let broker = PartitionedBroker::new(1);
    let callback = ScriptedCallback::new(|s| match s.position {
        Some((0, 0)) => Reply::Unreachable,
        _ => Reply::Status(200),
    });
    let mut s = settings(1);
    s.max_attempts = 1000;
    s.max_age = Duration::from_millis(100);
    let ctx = context(&control, 1, broker.clone(), callback.clone(), s);
    let sub = subscribe(&control, broker.as_ref(), "s1", "orders", 1).await;
    publish(&broker, 0, 0..2).await;
    let actor = start(ctx.clone(), sub).await;
    wait_until("the second message delivered", || {
        ctx.metrics.delivered.get() == 1
    })
    .await;
    let letter = control
        .reader()
        .read(|s| s.dead_letters.get(&("s1".to_owned(), 0, 0)).cloned())
        .expect("dead letter recorded");
    assert!(letter.attempts > 1 && letter.attempts < 1000, "{letter:?}");
    assert!(letter.last_error.contains("unreachable"), "{letter:?}");
    ctx.cursors.flush().await;
    assert_eq!(cursors(&control, "s1")[&0], 2);
    actor.stop_and_wait(None, None).await.unwrap();
}

#[tokio::test]
async fn a_dead_letter_that_cannot_be_recorded_is_not_skipped() {
    let control = MemoryControl::new(1);
    let broker = PartitionedBroker::new(1);
    let callback = ScriptedCallback::new(|s| match (s.position, s.attempt) {
        (Some((0, 0)), Some(1..=3)) => Reply::Status(500),
        _ => Reply::Status(200),
    });
    let mut s = settings(1);
    s.max_attempts = 2;
    let ctx = context(&control, 1, broker.clone(), callback.clone(), s);
    let sub = subscribe(&control, broker.as_ref(), "s1", "orders", 1).await;
    publish(&broker, 0, 0..1).await;
    // No quorum: neither the schedule nor the dead letter can be written.
    control.set_unavailable(true);
    let actor = start(ctx.clone(), sub).await;
    wait_until("delivered at the fourth attempt", || {
        ctx.metrics.delivered.get() == 1
    })
    .await;
    assert_eq!(callback.deliveries()[3].attempt, Some(4));
    assert!(control.reader().read(|s| s.dead_letters.is_empty()));
    control.set_unavailable(false);
    ctx.cursors.flush().await;
    assert_eq!(
        cursors(&control, "s1")[&0],
        1,
        "delivered at the fourth attempt"
    );
    actor.stop_and_wait(None, None).await.unwrap();
}

#[tokio::test]
async fn cursor_commits_count_only_from_the_owner_and_a_new_owner_resumes_there() {
    let control = MemoryControl::new(1);
    control.set_leadership(Some(1), [1, 2]);
    let broker = PartitionedBroker::new(1);
    let first = ScriptedCallback::new(|_| Reply::Status(200));
    let ctx1 = context(&control, 1, broker.clone(), first.clone(), settings(1));
    let sub = subscribe(&control, broker.as_ref(), "s1", "orders", 1).await;
    publish(&broker, 0, 0..5).await;
    let actor = start(ctx1.clone(), sub.clone()).await;
    wait_until("5 delivered on node 1", || {
        ctx1.metrics.delivered.get() == 5
    })
    .await;
    actor.stop_and_wait(None, None).await.unwrap();
    ctx1.cursors.flush().await;
    assert_eq!(cursors(&control, "s1")[&0], 5);

    // Ownership moves to node 2; a late commit of node 1 does not move the cursor.
    control.apply(Command::AssignOwner {
        id: "s1".to_owned(),
        owner: Some(2),
    });
    ctx1.cursors.record("s1", 0, 9);
    ctx1.cursors.flush().await;
    assert_eq!(
        cursors(&control, "s1")[&0],
        5,
        "a stale owner's commit is fenced"
    );

    publish(&broker, 0, 5..8).await;
    let second = ScriptedCallback::new(|_| Reply::Status(200));
    let ctx2 = context(&control, 2, broker.clone(), second.clone(), settings(1));
    let moved = control.reader().read(|s| s.subscriptions["s1"].clone());
    let actor = start(ctx2.clone(), moved).await;
    wait_until("3 delivered on node 2", || {
        ctx2.metrics.delivered.get() == 3
    })
    .await;
    assert_eq!(offsets(&second.deliveries(), 0), vec![5, 6, 7]);
    ctx2.cursors.flush().await;
    assert_eq!(cursors(&control, "s1")[&0], 8);
    actor.stop_and_wait(None, None).await.unwrap();
}

#[tokio::test]
async fn a_new_owner_continues_the_replicated_retry_schedule() {
    let control = MemoryControl::new(1);
    let broker = PartitionedBroker::new(1);
    let failing = ScriptedCallback::new(|_| Reply::Status(500));
    let ctx1 = context(&control, 1, broker.clone(), failing.clone(), settings(1));
    let sub = subscribe(&control, broker.as_ref(), "s1", "orders", 1).await;
    publish(&broker, 0, 0..1).await;
    let actor = start(ctx1, sub).await;
    wait_until("two failed attempts", || failing.deliveries().len() == 2).await;
    actor.stop_and_wait(None, None).await.unwrap();
    let recorded: BTreeMap<u64, u32> = control.reader().read(|s| {
        s.retries["s1"]
            .iter()
            .map(|e| (e.offset, e.attempt))
            .collect()
    });
    assert_eq!(recorded, BTreeMap::from([(0, 2)]));

    control.apply(Command::AssignOwner {
        id: "s1".to_owned(),
        owner: Some(2),
    });
    let working = ScriptedCallback::new(|_| Reply::Status(200));
    let ctx2 = context(&control, 2, broker.clone(), working.clone(), settings(1));
    let moved = control.reader().read(|s| s.subscriptions["s1"].clone());
    let actor = start(ctx2, moved).await;
    wait_until("delivered on node 2", || working.deliveries().len() == 1).await;
    assert_eq!(
        working.deliveries()[0].attempt,
        Some(3),
        "the new owner counts on from the replicated schedule"
    );
    actor.stop_and_wait(None, None).await.unwrap();
}

#[tokio::test]
async fn deliveries_are_signed_and_name_the_hub_and_topic() {
    let control = MemoryControl::new(1);
    let broker = PartitionedBroker::new(1);
    let callback = ScriptedCallback::new(|_| Reply::Status(204));
    let ctx = context(&control, 1, broker, callback, settings(1));
    let sub = Subscription {
        id: "s1".to_owned(),
        topic: "orders".to_owned(),
        callback: "http://subscriber.test/s1".to_owned(),
        secret: Some("s3cret".to_owned()),
        lease_seconds: 60,
        lease_expires_at_ms: u64::MAX,
        state: eventgate_raft_store::SubscriptionState::Active,
        owner: Some(1),
        created_at_ms: 0,
        updated_at_ms: 0,
        handover_to: None,
        topic_url: None,
        signing: Default::default(),
        previous_secret: None,
    };
    let message = Message {
        partition: 0,
        offset: 7,
        timestamp_ms: 0,
        key: None,
        headers: Vec::new(),
        content_type: Some("text/plain".to_owned()),
        payload: bytes::Bytes::from_static(b"m0"),
        tombstone: false,
    };
    let request = delivery_request(&ctx, &sub, &message, 2, Vec::new()).unwrap();
    let header = |name: &str| {
        request
            .headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
    };
    assert_eq!(request.url, sub.callback);
    assert_eq!(
        header("link").unwrap(),
        link_header(
            "http://gateway.test/hub",
            "http://gateway.test/topics/orders"
        )
    );
    assert_eq!(
        header("x-hub-signature").unwrap(),
        SignatureAlgorithm::Sha256.sign(b"s3cret", b"m0")
    );
    assert_eq!(header("content-type").unwrap(), "text/plain");
    assert_eq!(header(DELIVERY_HEADER).unwrap(), "s1:0:7");
    assert_eq!(header(ATTEMPT_HEADER).unwrap(), "2");
}

#[test]
fn a_schedule_waits_in_order_then_stops() {
    use crate::subscription::{RetryPolicy, STANDARD_SCHEDULE};
    let policy = RetryPolicy::Schedule(STANDARD_SCHEDULE.to_vec());
    assert_eq!(policy.attempts(), Some(10));
    for (i, wait) in STANDARD_SCHEDULE.iter().enumerate() {
        let delay = policy.delay(i as u32 + 1).unwrap();
        assert!(
            delay >= *wait && delay <= *wait + *wait / 10,
            "{delay:?} for {wait:?}"
        );
    }
    assert_eq!(policy.delay(10), None, "no wait after the last attempt");
    assert_eq!(policy.delay(0), None);
    let exponential = RetryPolicy::Exponential {
        base: Duration::from_secs(1),
        max: Duration::from_secs(4),
    };
    assert_eq!(exponential.attempts(), None);
    assert!(exponential.delay(50).unwrap() <= Duration::from_secs(4));
}

#[tokio::test]
async fn a_refused_message_goes_to_its_dead_letter_but_an_unwell_endpoint_is_paused() {
    // A 400 is the endpoint's word on one message: it does not count for the breaker, even
    // past its run, and the message is dead-lettered on its schedule.
    let control = MemoryControl::new(1);
    let broker = PartitionedBroker::new(1);
    let callback = ScriptedCallback::new(|s| match s.position {
        Some((0, 0)) => Reply::Status(400),
        _ => Reply::Status(200),
    });
    let mut s = settings(1);
    s.max_attempts = 5;
    let mut ctx = context(&control, 1, broker.clone(), callback.clone(), s.clone());
    let breaker = crate::endpoints::BreakerSettings {
        failure_run: 2,
        probe_initial: Duration::from_millis(50),
        probe_max: Duration::from_millis(50),
        ..Default::default()
    };
    ctx.endpoints = crate::endpoints::Endpoints::start(
        ctx.control.clone(),
        breaker.clone(),
        crate::endpoints::OperatorEvents::none(),
        Default::default(),
        tokio_util::sync::CancellationToken::new(),
    );
    let sub = subscribe(&control, broker.as_ref(), "s1", "orders", 1).await;
    publish(&broker, 0, 0..2).await;
    let actor = start(ctx.clone(), sub).await;
    wait_until("the second message delivered", || {
        ctx.metrics.delivered.get() == 1
    })
    .await;
    assert!(control
        .reader()
        .read(|s| s.dead_letters.contains_key(&("s1".to_owned(), 0, 0))));
    assert!(control.reader().read(|s| s.endpoints.is_empty()));
    actor.stop_and_wait(None, None).await.unwrap();

    // A 503 says the endpoint is unwell: after the run it is paused, the message held well
    // past max_attempts (probes), nothing dead-lettered, the cursor where it was.
    let control = MemoryControl::new(1);
    let callback = ScriptedCallback::new(|_| Reply::Status(503));
    let mut ctx = context(&control, 1, broker.clone(), callback.clone(), s);
    ctx.endpoints = crate::endpoints::Endpoints::start(
        ctx.control.clone(),
        breaker,
        crate::endpoints::OperatorEvents::none(),
        Default::default(),
        tokio_util::sync::CancellationToken::new(),
    );
    let sub = subscribe(&control, broker.as_ref(), "s2", "orders", 1).await;
    publish(&broker, 0, 2..3).await;
    let actor = start(ctx.clone(), sub).await;
    wait_until("attempts well past max_attempts", || {
        callback.deliveries().len() >= 8
    })
    .await;
    assert!(control.reader().read(|s| s.dead_letters.is_empty()));
    let paused = control
        .reader()
        .read(|s| s.endpoints.values().next().cloned());
    let paused = paused.expect("the endpoint is paused");
    assert_eq!(paused.origin, "http://subscriber.test");
    assert!(paused.failures >= 5, "{paused:?}");
    assert_eq!(
        offsets(&callback.deliveries(), 0),
        vec![2; callback.deliveries().len()]
    );
    ctx.cursors.flush().await;
    assert_eq!(cursors(&control, "s2")[&0], 2);
    actor.stop_and_wait(None, None).await.unwrap();
}
