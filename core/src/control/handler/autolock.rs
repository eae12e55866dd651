//! Autolock in the control API (moby `daemon/cluster/swarm.go` `GetUnlockKey`/`UnlockSwarm`,
//! swarmkit `controlapi/cluster.go`): turning it on makes an unlock key and seals it (with the
//! secrets key, the cluster's id as associated data) into the cluster object; `unlock-key
//! --rotate` replaces it; turning it off drops it. Every manager follows the cluster object and
//! re-wraps its data key (`crate::autolock`, `ShoalNode::follow_autolock`). The key is revealed
//! only in the answers of `unlock-key` and of turning autolock on, as Docker shows it.

use super::*;
use crate::api::Sealed;
use crate::autolock::UnlockKey;
use crate::secrets;

impl ControlHandler {
    /// A fresh unlock key, sealed for the cluster object.
    async fn new_sealed_unlock_key(&self, cluster_id: &str) -> Result<Sealed, ControlError> {
        let key = self.secrets_key().await?;
        Ok(secrets::seal(&key, cluster_id, UnlockKey::generate().bytes())?)
    }

    fn cluster_id(&self) -> Result<String, ControlError> {
        self.store.view(|s| {
            s.cluster
                .as_ref()
                .map(|c| c.id.clone())
                .ok_or_else(|| ControlError::Unavailable("the swarm is still starting".into()))
        })
    }

    /// The unlock key as the store holds it now (empty while autolock is off).
    async fn current_unlock_key(&self) -> ControlResult {
        let (cluster_id, sealed) = self.store.view(|s| {
            let cluster =
                s.cluster.as_ref().ok_or_else(|| ControlError::Unavailable("the swarm is still starting".into()))?;
            Ok::<_, ControlError>((
                cluster.id.clone(),
                cluster.spec.autolock_managers.then(|| cluster.unlock_key.clone()).flatten(),
            ))
        })?;
        let text = match sealed {
            None => String::new(),
            Some(sealed) => {
                let key = self.secrets_key().await?;
                let bytes = secrets::open(&key, &cluster_id, &sealed)?;
                UnlockKey::from_bytes(&bytes).map_err(|e| ControlError::Internal(e.to_string()))?.reveal()
            }
        };
        Ok(ControlResponse::UnlockKey { key: FileData(text) })
    }

    /// `swarm unlock-key [--rotate]`.
    pub(super) async fn unlock_key(&self, rotate: bool) -> ControlResult {
        if rotate {
            let autolock = self.store.view(|s| s.cluster.as_ref().is_some_and(|c| c.spec.autolock_managers));
            if !autolock {
                // docker/cli `swarm/unlock_key.go`.
                return Err(ControlError::FailedPrecondition("cannot rotate because autolock is not turned on".into()));
            }
            let sealed = self.new_sealed_unlock_key(&self.cluster_id()?).await?;
            self.write(|s| {
                let Some(cluster) = s.cluster.as_ref() else { return Ok(vec![]) };
                let mut cluster = cluster.clone();
                cluster.unlock_key = Some(sealed.clone());
                Ok(vec![Action::Update(Object::Cluster(cluster))])
            })
            .await?;
        }
        self.current_unlock_key().await
    }

    /// `swarm init|update --autolock=BOOL`; answers the key in force afterwards.
    pub(super) async fn set_autolock(&self, enabled: bool) -> ControlResult {
        let has_key = self.store.view(|s| s.cluster.as_ref().is_some_and(|c| c.unlock_key.is_some()));
        let sealed =
            if enabled && !has_key { Some(self.new_sealed_unlock_key(&self.cluster_id()?).await?) } else { None };
        self.write(|s| {
            let Some(cluster) = s.cluster.as_ref() else { return Ok(vec![]) };
            let mut cluster = cluster.clone();
            if cluster.spec.autolock_managers == enabled && (cluster.unlock_key.is_some() == enabled) {
                return Ok(vec![]);
            }
            cluster.spec.autolock_managers = enabled;
            if !enabled {
                cluster.unlock_key = None;
            } else if cluster.unlock_key.is_none() {
                cluster.unlock_key = sealed.clone();
            }
            Ok(vec![Action::Update(Object::Cluster(cluster))])
        })
        .await?;
        self.current_unlock_key().await
    }
}
