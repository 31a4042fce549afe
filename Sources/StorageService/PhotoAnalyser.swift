import Imaging
import Wire

/// Finds what is in a photo (labels, faces, objects) for `ai_metadata`.
///
/// A deployment plugs in a real model here. The built-in analyser computes no labels, faces
/// or objects, and says so: an empty list is the honest answer when nothing looked.
public protocol PhotoAnalyser: Sendable {
    /// Recorded in `ai_metadata.analyser`.
    var name: String { get }
    /// Analyses the photo at `path` (already validated and measured in `analysis`).
    func analyse(path: String, analysis: ImageAnalysis) async throws -> AIMetadata
}

/// The analyser used when none is configured: no labels, faces or objects.
public struct NoAIAnalyser: PhotoAnalyser {
    public init() {}
    public var name: String { "none" }
    public func analyse(path: String, analysis: ImageAnalysis) async throws -> AIMetadata {
        AIMetadata(labels: [], faces: [], objects: [], analyser: name)
    }
}
