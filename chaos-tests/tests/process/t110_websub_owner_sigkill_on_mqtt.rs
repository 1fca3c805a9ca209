use eventgate_chaos_tests::init_logging;
use eventgate_chaos_tests::mosquitto::Mosquitto;

use super::t80_websub_owner_sigkill_on_kafka::owner_sigkill_without_loss;

/// t80 on MQTT (Mosquitto): WebSub subscriptions are persistent MQTT sessions acknowledged
/// only after delivery, so when the owner is SIGKILLed the new owner takes over the session
/// and the broker redelivers what was not acknowledged: no loss, in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websub_on_mqtt_survives_sigkill_of_an_owner_without_loss() -> anyhow::Result<()> {
    init_logging();
    let dir = tempfile::tempdir()?;
    let mosquitto = Mosquitto::start(dir.path()).await?;
    owner_sigkill_without_loss(format!(
        "[broker]\nkind = \"mqtt\"\ntopic_prefix = \"eventgate/\"\n[broker.mqtt]\naddress = \"{}\"\ncontent_type = \"text/plain\"\n",
        mosquitto.address()
    ))
    .await?;
    drop(mosquitto);
    Ok(())
}
