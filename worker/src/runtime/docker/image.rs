//! Making sure a step's image is on the engine before its container is created, by the step's
//! pull policy. Every way this fails is an [`Error::Image`] whose reason says what to do next, so
//! the caller can fail the step once (a retry on the same host would fail the same way) instead
//! of retrying it into a storm of pulls. A pull is bounded (by default [`PULL_TIMEOUT`]): a
//! registry that does not answer ends the step with a reason instead of hanging it. With
//! `always`, a registry that is down fails the step even when the engine holds an older copy:
//! that is what `always` asks for (`if-not-present` uses the copy).

use std::time::Duration;

use bollard::Docker;
use bollard::query_parameters::CreateImageOptionsBuilder;
use tokio_stream::StreamExt;

use super::config::pull_reference;
use super::engine_error;
use crate::runtime::{Error, Image, PullPolicy};

/// The longest a pull may take by default, download included. Large ML images take minutes on a
/// slow link; beyond this the registry is taken as unreachable.
pub const PULL_TIMEOUT: Duration = Duration::from_secs(5 * 60);

/// Has `image.name` on the engine by `image.pull`, pulling it (for at most `bound`) if the policy
/// says so.
pub async fn ensure(docker: &Docker, image: &Image, bound: Duration) -> Result<(), Error> {
    let name = &image.name;
    let fail = |reason: String| Error::Image { image: name.clone(), reason };
    match image.pull {
        PullPolicy::Always => pull(docker, name, bound).await.map_err(|e| {
            fail(format!(
                "pull failed (pull policy always): {e}; make the registry reachable, or set `pull: if-not-present` to run the copy already on this host"
            ))
        }),
        PullPolicy::IfNotPresent => {
            if present(docker, name).await? {
                return Ok(());
            }
            pull(docker, name, bound).await.map_err(|e| {
                fail(format!(
                    "not on this Docker engine and the pull failed: {e}; make the registry reachable, or put the image on this host (`docker pull {name}` elsewhere, then `docker save` | `docker load`)"
                ))
            })
        }
        PullPolicy::Never => match present(docker, name).await? {
            true => Ok(()),
            false => Err(fail(
                "not on this Docker engine and the pull policy is never: load it (`docker load`) or build it on this host, or set `pull: if-not-present`".into(),
            )),
        },
    }
}

/// Whether the engine has an image of that name.
async fn present(docker: &Docker, name: &str) -> Result<bool, Error> {
    match docker.inspect_image(name).await {
        Ok(_) => Ok(true),
        Err(bollard::errors::Error::DockerResponseServerError { status_code: 404, .. }) => Ok(false),
        // The engine's answer to a name it cannot parse (upper case, spaces): no pull can help.
        Err(bollard::errors::Error::DockerResponseServerError { status_code: 400, message }) => Err(Error::Image {
            image: name.to_string(),
            reason: format!("not a valid image name ({message}): fix `image:` in the pipeline"),
        }),
        Err(e) => Err(engine_error(format!("inspecting image {name}"), e)),
    }
}

/// Pulls `name`, reading the engine's progress stream to its end (the pull is done only then).
async fn pull(docker: &Docker, name: &str, bound: Duration) -> Result<(), String> {
    let (image, tag) = pull_reference(name);
    let options = CreateImageOptionsBuilder::new().from_image(image).tag(tag).build();
    let started = crate::clock::instant();
    tracing::info!(image = name, "pulling image");
    let progress = async {
        let mut stream = docker.create_image(Some(options), None, None);
        while let Some(item) = stream.next().await {
            item.map_err(|e| e.to_string())?;
        }
        Ok(())
    };
    // Dropping the stream on timeout closes the request, which cancels the engine's pull.
    let result = match tokio::time::timeout(bound, progress).await {
        Ok(result) => result,
        Err(_) => Err(format!("the pull did not finish within {bound:?}")),
    };
    crate::metrics::image_pulled(started.elapsed().as_secs_f64());
    match &result {
        Ok(()) => tracing::info!(image = name, took = ?started.elapsed(), "pulled image"),
        Err(error) => tracing::warn!(image = name, took = ?started.elapsed(), %error, "pull failed"),
    }
    result
}
