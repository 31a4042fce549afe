import BlobStore
import Logging
import ServiceLifecycle

/// Removes upload temp files that no upload will finish (a gateway that died mid-upload):
/// every `interval`, those older than `maxAge` go.
struct BlobJanitor: Service {
    let blobs: BlobStore
    let interval: Duration
    let maxAge: Duration
    let logger: Logger

    func run() async throws {
        while !Task.isShuttingDownGracefully && !Task.isCancelled {
            let removed = blobs.sweepTemporaryFiles(olderThan: Double(maxAge.components.seconds))
            if removed > 0 {
                logger.info("removed abandoned upload files", metadata: ["blob.removed": "\(removed)"])
            }
            try? await cancelWhenGracefulShutdown { try await Task.sleep(for: interval) }
        }
    }
}
