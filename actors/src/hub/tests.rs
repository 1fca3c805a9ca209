//! Verification of intent, the hub's supervision and the coordinator against the in-memory
//! control plane and a scripted callback: no Raft, no sockets.

use std::sync::Arc;
use std::time::Duration;

use eventgate_raft_store::{Command, NodeId};
use ractor::Actor;

use super::*;
use crate::broker::BrokerDriver;
use crate::callback::CallbackMethod;
use crate::control::{ControlPort, MemoryControl};
use crate::testing::{
    context, settings, subscribe, wait_until, PartitionedBroker, Reply, ScriptedCallback,
};

const CALLBACK: &str = "http://subscriber.test/cb?user=7";

fn intent(mode: IntentMode, application: Option<(&str, &str)>) -> Intent {
    Intent {
        mode,
        topic: "orders".to_owned(),
        topic_as_given: "http://gateway.test/topics/orders".to_owned(),
        callback: CALLBACK.to_owned(),
        application: application.map(|(app, api)| (app.to_owned(), api.to_owned())),
        key: Some("key-1".to_owned()),
    }
}

fn subscribe_mode() -> IntentMode {
    IntentMode::Subscribe {
        lease_seconds: 600,
        secret: Some("s3cret".to_owned()),
        signing: eventgate_raft_store::Signing::WebSub,
    }
}

async fn setup(reply: Reply) -> (MemoryControl, Arc<ScriptedCallback>, DeliveryContext) {
    let control = MemoryControl::new(1);
    let broker = PartitionedBroker::new(1);
    broker.ensure_topic("orders").await.unwrap();
    broker.publish_to("orders", 0, "before".to_owned()).await;
    let callback = ScriptedCallback::new(move |_| reply.clone());
    let ctx = context(&control, 1, broker, callback.clone(), settings(1));
    (control, callback, ctx)
}

fn subscription_writes(control: &MemoryControl) -> usize {
    control
        .written()
        .iter()
        .filter(|(_, c)| {
            matches!(
                c,
                Command::ActivateSubscription { .. }
                    | Command::ActivateSubscriptionFor { .. }
                    | Command::SetWebsubApplication { .. }
                    | Command::RemoveSubscription { .. }
            )
        })
        .count()
}

#[tokio::test]
async fn a_verified_subscription_is_activated_with_its_application_in_one_write() {
    let (control, callback, ctx) = setup(Reply::Echo).await;
    process_intent(ctx, intent(subscribe_mode(), Some(("shop-app", "shop")))).await;

    let seen = callback.seen();
    assert_eq!(seen.len(), 1);
    let check = &seen[0];
    assert_eq!(check.method, CallbackMethod::Get);
    assert!(
        check.url.starts_with("http://subscriber.test/cb?user=7&"),
        "{}",
        check.url
    );
    assert_eq!(check.query("hub.mode").as_deref(), Some("subscribe"));
    assert_eq!(
        check.query("hub.topic").as_deref(),
        Some("http://gateway.test/topics/orders"),
        "hub.topic is echoed as the subscriber gave it"
    );
    assert_eq!(check.query("hub.lease_seconds").as_deref(), Some("600"));
    assert!(check.query("hub.challenge").is_some_and(|c| c.len() >= 32));

    let id = subscription_id("orders", CALLBACK);
    let (sub, cursor, application) = control.reader().read(|s| {
        (
            s.subscriptions.get(&id).cloned(),
            s.cursors.get(&id).cloned(),
            s.governance.websub_applications.get(&id).cloned(),
        )
    });
    let sub = sub.expect("subscription recorded");
    assert_eq!(sub.state, SubscriptionState::Active);
    assert_eq!(sub.secret.as_deref(), Some("s3cret"));
    assert_eq!(
        sub.topic_url.as_deref(),
        Some("http://gateway.test/topics/orders")
    );
    assert_eq!(
        cursor.unwrap()[&0],
        1,
        "what was published before is not delivered"
    );
    assert_eq!(
        application,
        Some(("shop-app".to_owned(), "shop".to_owned()))
    );
    assert_eq!(
        control
            .reader()
            .read(|s| s.governance.websub_keys.get(&id).cloned()),
        Some("key-1".to_owned()),
        "the key it was made with is recorded in the same write"
    );
    let writes: Vec<_> = control
        .written()
        .into_iter()
        .map(|(_, c)| c.name())
        .collect();
    assert_eq!(
        writes,
        vec!["activate-subscription-for"],
        "one atomic write"
    );
}

#[tokio::test]
async fn a_callback_that_does_not_confirm_is_not_subscribed() {
    for (reply, why) in [
        (Reply::Body(200, "not the challenge"), "wrong challenge"),
        (Reply::Status(404), "404"),
        (Reply::Status(302), "redirect"),
        (Reply::Status(500), "server error"),
        (Reply::Unreachable, "no answer"),
    ] {
        let (control, callback, ctx) = setup(reply).await;
        process_intent(ctx, intent(subscribe_mode(), Some(("shop-app", "shop")))).await;
        assert_eq!(callback.seen().len(), 1, "{why}: one verification request");
        assert_eq!(subscription_writes(&control), 0, "{why}: nothing recorded");
        assert!(
            control.reader().read(|s| s.subscriptions.is_empty()),
            "{why}: no subscription"
        );
    }
}

#[tokio::test]
async fn a_denial_tells_the_callback_why_and_records_nothing() {
    let (control, callback, ctx) = setup(Reply::Status(200)).await;
    let mode = IntentMode::Deny {
        reason: "application `a` may not subscribe to `orders`".to_owned(),
    };
    process_intent(ctx, intent(mode, None)).await;
    let seen = callback.seen();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].method, CallbackMethod::Get);
    assert_eq!(seen[0].query("hub.mode").as_deref(), Some("denied"));
    assert_eq!(
        seen[0].query("hub.topic").as_deref(),
        Some("http://gateway.test/topics/orders")
    );
    assert_eq!(
        seen[0].query("hub.reason").as_deref(),
        Some("application `a` may not subscribe to `orders`")
    );
    assert!(control.written().is_empty());
}

#[tokio::test]
async fn an_unsubscribe_is_verified_before_the_subscription_ends() {
    // Unknown subscription: nothing to verify, nothing written.
    let (control, callback, ctx) = setup(Reply::Echo).await;
    process_intent(ctx.clone(), intent(IntentMode::Unsubscribe, None)).await;
    assert!(callback.seen().is_empty());
    assert!(control.written().is_empty());

    // A subscriber that does not confirm keeps its subscription.
    process_intent(ctx.clone(), intent(subscribe_mode(), None)).await;
    let id = subscription_id("orders", CALLBACK);
    assert!(control.reader().read(|s| s.subscriptions.contains_key(&id)));
    let refusing = ScriptedCallback::new(|_| Reply::Status(404));
    let ctx_refusing = DeliveryContext {
        client: refusing.clone(),
        ..ctx.clone()
    };
    process_intent(ctx_refusing, intent(IntentMode::Unsubscribe, None)).await;
    assert_eq!(
        refusing.seen()[0].query("hub.mode").as_deref(),
        Some("unsubscribe")
    );
    assert!(control.reader().read(|s| s.subscriptions.contains_key(&id)));

    // Confirmed: removed, with its cursor.
    process_intent(ctx, intent(IntentMode::Unsubscribe, None)).await;
    let last = callback.seen().pop().unwrap();
    assert_eq!(last.query("hub.mode").as_deref(), Some("unsubscribe"));
    assert!(last.query("hub.lease_seconds").is_none());
    assert!(control
        .reader()
        .read(|s| !s.subscriptions.contains_key(&id) && !s.cursors.contains_key(&id)));
}

#[tokio::test]
async fn the_hub_delivers_what_its_node_owns_and_lets_go_when_ownership_moves() {
    let control = MemoryControl::new(1);
    control.set_leadership(Some(1), [1, 2]);
    let broker = PartitionedBroker::new(1);
    let one = ScriptedCallback::new(|_| Reply::Status(200));
    let two = ScriptedCallback::new(|_| Reply::Status(200));
    let ctx1 = context(&control, 1, broker.clone(), one.clone(), settings(1));
    let ctx2 = context(&control, 2, broker.clone(), two.clone(), settings(1));
    let (hub1, _) = Actor::spawn(None, HubSupervisor, ctx1.clone())
        .await
        .unwrap();
    let (hub2, _) = Actor::spawn(None, HubSupervisor, ctx2.clone())
        .await
        .unwrap();
    // Each hub's start-up barrier is a heartbeat of its own.
    wait_until("both barriers written", || {
        control
            .reader()
            .read(|s| s.nodes.contains_key(&1) && s.nodes.contains_key(&2))
    })
    .await;

    subscribe(&control, broker.as_ref(), "s1", "orders", 1).await;
    for i in 0..3 {
        broker.publish_to("orders", 0, format!("m{i}")).await;
    }
    wait_until("node 1 delivered 3", || ctx1.metrics.delivered.get() == 3).await;
    ctx1.cursors.flush().await;

    control.apply(Command::AssignOwner {
        id: "s1".to_owned(),
        owner: Some(2),
    });
    for i in 3..6 {
        broker.publish_to("orders", 0, format!("m{i}")).await;
    }
    wait_until("node 2 delivered 3", || two.deliveries().len() == 3).await;
    let offsets: Vec<u64> = two
        .deliveries()
        .iter()
        .filter_map(|s| s.position)
        .map(|(_, o)| o)
        .collect();
    assert_eq!(
        offsets,
        vec![3, 4, 5],
        "node 2 starts at node 1's committed cursor"
    );
    // Until node 1 has applied the move it may still deliver (at least once); once node 2
    // delivers, node 1 has stopped: what is published next reaches node 2 only.
    let one_before = one.deliveries().len();
    for i in 6..9 {
        broker.publish_to("orders", 0, format!("m{i}")).await;
    }
    wait_until("node 2 delivered 6", || two.deliveries().len() == 6).await;
    assert_eq!(
        one.deliveries().len(),
        one_before,
        "node 1 stopped when ownership moved"
    );
    hub1.stop_and_wait(None, None).await.unwrap();
    hub2.stop_and_wait(None, None).await.unwrap();
}

fn fast_coordinator() -> CoordinatorSettings {
    CoordinatorSettings {
        heartbeat_every: Duration::from_millis(20),
        dead_after: Duration::from_millis(100),
        grace: Duration::from_millis(30),
        settle: Duration::from_millis(300),
        handover_timeout: Duration::from_secs(10),
    }
}

fn moves(control: &MemoryControl, drain: bool) -> usize {
    control
        .written()
        .iter()
        .filter_map(|(_, c)| match c {
            Command::MoveOwners { moves, .. } => {
                Some(moves.iter().filter(|m| m.drain == drain).count())
            }
            _ => None,
        })
        .sum()
}

/// Node 1's coordinator, with node `leader` leading voters 1 and 2, and subscription `s1`
/// owned by `owner`.
async fn coordinator_of_node_1(
    leader: NodeId,
    owner: NodeId,
    silent: Option<NodeId>,
) -> (
    MemoryControl,
    CancellationToken,
    tokio::task::JoinHandle<()>,
) {
    let control = MemoryControl::new(1);
    control.set_leadership(Some(leader), [1, 2]);
    let broker = PartitionedBroker::new(1);
    let callback = ScriptedCallback::new(|_| Reply::Status(200));
    let ctx = context(&control, 1, broker.clone(), callback, settings(1));
    subscribe(&control, broker.as_ref(), "s1", "orders", owner).await;
    if let Some(node) = silent {
        control.set_silent(node, true);
    }
    let cancel = CancellationToken::new();
    let coordinator = tokio::spawn(run_coordinator(ctx, fast_coordinator(), cancel.clone()));
    (control, cancel, coordinator)
}

/// How many heartbeats node 1 has written.
fn heartbeats_of_node_1(control: &MemoryControl) -> usize {
    control
        .written()
        .iter()
        .filter(|(n, c)| *n == 1 && matches!(c, Command::NodeHeartbeat { .. }))
        .count()
}

#[tokio::test]
async fn the_leader_reassigns_the_subscriptions_of_a_silent_node() {
    // Node 2 stops answering Raft's heartbeats: after the new leader's grace and
    // `dead_after` it is dead, and its subscription moves at once to the only live node.
    let (control, cancel, coordinator) = coordinator_of_node_1(1, 2, Some(2)).await;
    wait_until("s1 moved to node 1", || {
        control
            .reader()
            .read(|s| s.subscriptions["s1"].owner == Some(1))
    })
    .await;
    assert_eq!(moves(&control, false), 1);
    assert_eq!(moves(&control, true), 0, "a dead owner cannot drain");
    cancel.cancel();
    coordinator.await.unwrap();
}

#[tokio::test]
async fn a_live_member_keeps_its_subscriptions_without_writing_any_heartbeat() {
    // Node 2 writes no heartbeat at all, but it answers Raft: it is alive.
    let (control, cancel, coordinator) = coordinator_of_node_1(1, 2, None).await;
    // Twenty of node 1's heartbeats cover several `dead_after`s.
    wait_until("twenty heartbeats of node 1", || {
        heartbeats_of_node_1(&control) >= 20
    })
    .await;
    let owner = control.reader().read(|s| s.subscriptions["s1"].owner);
    let handover = control.reader().read(|s| s.subscriptions["s1"].handover_to);
    assert_eq!(owner, Some(2));
    // Rendezvous hashing may prefer node 1 for s1: then a handover, never a takeover.
    assert_eq!(moves(&control, false), 0, "{handover:?}");
    cancel.cancel();
    coordinator.await.unwrap();
}

#[tokio::test]
async fn a_follower_reassigns_nothing() {
    // Node 1 keeps writing heartbeats; as long as it follows it moves nothing, however long
    // node 3 (not even a member) has been gone. Ten of its heartbeats cover several
    // `dead_after`s.
    let (control, cancel, coordinator) = coordinator_of_node_1(2, 3, None).await;
    wait_until("ten heartbeats of node 1", || {
        heartbeats_of_node_1(&control) >= 10
    })
    .await;
    assert_eq!(
        control
            .as_node(1)
            .reader()
            .read(|s| s.subscriptions["s1"].owner),
        Some(3)
    );
    // Once it leads (after its grace), it does.
    control.set_leadership(Some(1), [1, 2]);
    wait_until("s1 moved", || {
        control
            .reader()
            .read(|s| s.subscriptions["s1"].owner != Some(3))
    })
    .await;
    cancel.cancel();
    coordinator.await.unwrap();
}

/// A subscription id whose rendezvous owner among `members` is `owner`.
fn id_owned_by(owner: NodeId, members: [NodeId; 2]) -> String {
    (0..)
        .map(|i| format!("s{i}"))
        .find(|id| crate::ownership::owner_of(id, members) == Some(owner))
        .unwrap()
}

/// Offsets each callback received, in arrival order.
fn offsets(callback: &ScriptedCallback) -> Vec<u64> {
    callback
        .deliveries()
        .iter()
        .filter_map(|s| s.position)
        .map(|(_, o)| o)
        .collect()
}

/// Publishes `n` messages to partition 0 of `orders`, one every 2 ms.
fn publish_steadily(broker: Arc<PartitionedBroker>, n: usize) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        for i in 0..n {
            broker.publish_to("orders", 0, format!("m{i}")).await;
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    })
}

/// Every offset from 0 to `n` delivered exactly once over both callbacks, and the second
/// carries on where the first stopped.
fn assert_handed_over_exactly(first: &[u64], second: &[u64], n: u64) {
    assert!(
        !first.is_empty() && !second.is_empty(),
        "{first:?} / {second:?}"
    );
    let mut all: Vec<u64> = first.iter().chain(second).copied().collect();
    assert_eq!(
        all.len() as u64,
        n,
        "no message repeated or lost: {first:?} / {second:?}"
    );
    all.sort_unstable();
    assert_eq!(all, (0..n).collect::<Vec<_>>());
    assert_eq!(
        second[0],
        first.iter().max().unwrap() + 1,
        "the new owner starts at the exact cursor"
    );
}

#[tokio::test]
async fn a_returning_node_gets_its_subscriptions_back_by_a_handover_that_repeats_nothing() {
    let control = MemoryControl::new(1);
    control.set_leadership(Some(1), [1, 2]);
    let broker = PartitionedBroker::new(1);
    let id = id_owned_by(2, [1, 2]);
    subscribe(&control, broker.as_ref(), &id, "orders", 2).await;
    // Slow enough answers that deliveries are in flight (window 4) when the handover comes.
    let one = ScriptedCallback::new(|_| Reply::Slow(200, Duration::from_millis(3)));
    let two = ScriptedCallback::new(|_| Reply::Slow(200, Duration::from_millis(3)));
    let ctx1 = context(&control, 1, broker.clone(), one.clone(), settings(4));
    let (hub1, _) = Actor::spawn(None, HubSupervisor, ctx1.clone())
        .await
        .unwrap();
    let cancel = CancellationToken::new();
    // Node 2 died: its subscription moves to node 1 at once.
    control.set_silent(2, true);
    let coordinator = tokio::spawn(run_coordinator(
        ctx1.clone(),
        fast_coordinator(),
        cancel.clone(),
    ));
    wait_until("node 1 took over", || {
        control
            .reader()
            .read(|s| s.subscriptions[&id].owner == Some(1))
    })
    .await;
    let publishing = publish_steadily(broker.clone(), 300);
    wait_until("node 1 delivering", || one.deliveries().len() >= 50).await;
    // Node 2 comes back: once it has answered for `settle`, rendezvous hashing gives the
    // subscription back to it, by handover.
    control.set_silent(2, false);
    let ctx2 = context(&control, 2, broker.clone(), two.clone(), settings(4));
    let (hub2, _) = Actor::spawn(None, HubSupervisor, ctx2).await.unwrap();
    publishing.await.unwrap();
    wait_until("all 300 delivered", || {
        one.deliveries().len() + two.deliveries().len() >= 300
    })
    .await;
    assert_eq!(
        control.reader().read(|s| s.subscriptions[&id].owner),
        Some(2)
    );
    assert_eq!(moves(&control, true), 1);
    assert_handed_over_exactly(&offsets(&one), &offsets(&two), 300);
    cancel.cancel();
    coordinator.await.unwrap();
    hub1.stop_and_wait(None, None).await.unwrap();
    hub2.stop_and_wait(None, None).await.unwrap();
}

#[tokio::test]
async fn a_leaving_node_hands_its_subscriptions_over_and_repeats_nothing() {
    let control = MemoryControl::new(1);
    control.set_leadership(Some(1), [1, 2]);
    let broker = PartitionedBroker::new(1);
    let id = id_owned_by(1, [1, 2]);
    subscribe(&control, broker.as_ref(), &id, "orders", 1).await;
    let one = ScriptedCallback::new(|_| Reply::Slow(200, Duration::from_millis(3)));
    let two = ScriptedCallback::new(|_| Reply::Slow(200, Duration::from_millis(3)));
    let ctx1 = context(&control, 1, broker.clone(), one.clone(), settings(4));
    let ctx2 = context(&control, 2, broker.clone(), two.clone(), settings(4));
    let (hub1, _) = Actor::spawn(None, HubSupervisor, ctx1.clone())
        .await
        .unwrap();
    let (hub2, _) = Actor::spawn(None, HubSupervisor, ctx2).await.unwrap();
    let cancel = CancellationToken::new();
    // Node 1 leads and is the one that leaves (a SIGTERM): it hands over itself.
    let coordinator = tokio::spawn(run_coordinator(
        ctx1.clone(),
        fast_coordinator(),
        cancel.clone(),
    ));
    let publishing = publish_steadily(broker.clone(), 300);
    wait_until("node 1 delivering", || one.deliveries().len() >= 50).await;
    control.apply(Command::NodeLeaving {
        node: 1,
        at_ms: eventgate_raft_store::clock::now_ms(),
    });
    wait_until("node 2 owns it", || {
        control
            .reader()
            .read(|s| s.subscriptions[&id].owner == Some(2))
    })
    .await;
    publishing.await.unwrap();
    wait_until("all 300 delivered", || {
        one.deliveries().len() + two.deliveries().len() >= 300
    })
    .await;
    assert_eq!(moves(&control, false), 0, "no takeover");
    assert_handed_over_exactly(&offsets(&one), &offsets(&two), 300);
    cancel.cancel();
    coordinator.await.unwrap();
    hub1.stop_and_wait(None, None).await.unwrap();
    hub2.stop_and_wait(None, None).await.unwrap();
}

/// A policy whose verdict the test sets: the node's rights, as the hub sees them.
#[derive(Debug, Default)]
struct Switch {
    withdrawn: std::sync::Mutex<Option<String>>,
}

impl crate::subscription::DeliveryPolicy for Switch {
    fn withdrawn(&self, _subscription: &Subscription) -> Option<String> {
        self.withdrawn.lock().unwrap().clone()
    }

    fn allow<'a>(
        &'a self,
        _id: &'a str,
    ) -> futures_util::future::BoxFuture<'a, crate::subscription::Allowance> {
        Box::pin(async { crate::subscription::Allowance::Deliver })
    }
}

#[tokio::test]
async fn a_subscription_whose_right_is_withdrawn_is_ended_and_its_subscriber_told() {
    let control = MemoryControl::new(1);
    let broker = PartitionedBroker::new(1);
    let callback = ScriptedCallback::new(|_| Reply::Status(200));
    let switch = Arc::new(Switch::default());
    let mut ctx = context(&control, 1, broker.clone(), callback.clone(), settings(1));
    ctx.policy = Some(switch.clone());
    let (hub, _) = Actor::spawn(None, HubSupervisor, ctx.clone())
        .await
        .unwrap();
    subscribe(&control, broker.as_ref(), "s1", "orders", 1).await;
    broker.publish_to("orders", 0, "m0".to_owned()).await;
    wait_until("m0 delivered", || ctx.metrics.delivered.get() == 1).await;

    *switch.withdrawn.lock().unwrap() = Some("application `a` is disabled".to_owned());
    // Published once the right is gone: never delivered.
    broker.publish_to("orders", 0, "m1".to_owned()).await;
    // Any applied change makes the hub look again; a heartbeat will do.
    control.apply(Command::NodeHeartbeat { node: 1, at_ms: 1 });
    wait_until("the subscription removed", || {
        control
            .reader()
            .read(|s| !s.subscriptions.contains_key("s1"))
    })
    .await;
    wait_until("the subscriber told", || {
        callback
            .seen()
            .iter()
            .any(|s| s.method == CallbackMethod::Get)
    })
    .await;
    let denial = callback
        .seen()
        .into_iter()
        .find(|s| s.method == CallbackMethod::Get)
        .unwrap();
    assert_eq!(denial.query("hub.mode").as_deref(), Some("denied"));
    assert_eq!(denial.query("hub.topic").as_deref(), Some("orders"));
    assert_eq!(
        denial.query("hub.reason").as_deref(),
        Some("application `a` is disabled")
    );
    assert_eq!(callback.deliveries().len(), 1, "m1 was never delivered");
    hub.stop_and_wait(None, None).await.unwrap();
}
