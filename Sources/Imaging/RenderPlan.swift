/// A width × height in pixels.
struct PixelSize: Hashable, Sendable, CustomStringConvertible {
    var width: Int
    var height: Int

    init(_ width: Int, _ height: Int) {
        self.width = width
        self.height = height
    }

    var pixels: Int { width * height }
    var description: String { "\(width)x\(height)" }

    /// At least `other` on both sides.
    func covers(_ other: PixelSize) -> Bool { width >= other.width && height >= other.height }
}

/// How ``Imaging/render(_:versions:)`` makes a set of versions from ONE decode. Pure size
/// arithmetic (no libvips), so the choice of sources is tested on its own. Sizes are of the
/// upright picture.
///
/// * The **base** is the one image decoded: the whole picture at the largest scale any version
///   needs (never above full size), decoded with shrink-on-load and resized once, while
///   streaming, to exactly this size. When the largest version is a `.fit`, the base *is* that
///   version's output, so it costs no second resize.
/// * Each version is made from the **smallest image in memory that is large enough**: the
///   base, or a `.fit` version made before it (a `.fit` is the whole picture, so the thumbnail
///   comes from hd and a 1024×600 cover from hd, never from the full decode). Large enough
///   means no upscale: a `.fit` needs a source at least its size, a `.cover` a source whose
///   cover region is at least the box. Only the base is ever upscaled from, when the picture
///   itself is smaller than what a version asks for.
/// * Versions are made from the largest scale down (a `.fit` before a `.cover` of the same
///   scale), so every source exists before it is used; an image is released after the last
///   step that uses it, so the base is not held while the smaller versions are encoded.
/// * Covers are placed by attention found on one small copy of the picture (the
///   ``Work/attention`` step, just before the first cover that cuts the picture; a cover of
///   the picture's own shape needs none): the picture fitted into `attentionSide` ×
///   `attentionSide`, or the base itself when that is smaller.
struct RenderPlan: Equatable, Sendable {
    enum Source: Hashable, Sendable, CustomStringConvertible {
        case base
        /// The `.fit` version at this index of the specs.
        case version(Int)

        var description: String {
            switch self {
            case .base: "base"
            case .version(let index): "version \(index)"
            }
        }
    }

    enum Work: Hashable, Sendable {
        /// Make (and encode) the version at this index of the specs.
        case version(Int)
        /// Make the small copy that covers are placed on.
        case attention
    }

    struct Step: Equatable, Sendable {
        var work: Work
        var source: Source
        /// What the step makes: a `.fit`'s size, a `.cover`'s box, the attention copy's size.
        var size: PixelSize
        /// Held in memory after this step, because a later step is made from it.
        var kept = false
        /// Images no later step uses: released once this step is done.
        var releases: [Source] = []
    }

    var base: PixelSize
    var steps: [Step]

    init(specs: [VersionSpec], width: Int, height: Int, attentionSide: Int) {
        precondition(!specs.isEmpty && width > 0 && height > 0 && attentionSide > 0,
                     "a render plan needs versions and a picture")
        let scales = specs.map { Geometry.neededScale($0, width: width, height: height) }
        let outputs = specs.map { Self.outputSize($0, width: width, height: height) }
        let order = specs.indices.sorted { a, b in
            if scales[a] != scales[b] { return scales[a] > scales[b] }
            if specs[a].mode != specs[b].mode { return specs[a].mode == .fit }
            return a < b
        }

        let largest = order[0]
        let base: PixelSize
        if scales[largest] >= 1 {
            base = PixelSize(width, height)
        } else if specs[largest].mode == .fit {
            base = outputs[largest]
        } else {
            // Rounded up, so the cover's region of the base is at least its box.
            let size = Geometry.intermediate(for: [specs[largest]], width: width, height: height)
            base = PixelSize(size.width, size.height)
        }

        var available: [(source: Source, size: PixelSize)] = [(.base, base)]
        var steps: [Step] = []
        var attentionPlanned = false
        for index in order {
            let spec = specs[index]
            if !attentionPlanned && Self.cuts(spec, width: width, height: height) {
                let fit = Geometry.fit(width: width, height: height, boxWidth: attentionSide, boxHeight: attentionSide)
                let wanted = PixelSize(fit.width, fit.height)
                let size = base.covers(wanted) ? wanted : base
                let source = Self.smallest(available) { $0.covers(size) }
                steps.append(Step(work: .attention, source: source, size: size))
                attentionPlanned = true
            }
            let output = outputs[index]
            let source = Self.smallest(available) { Self.suffices($0, for: spec, output: output) }
            steps.append(Step(work: .version(index), source: source, size: output))
            if spec.mode == .fit { available.append((.version(index), output)) }
        }

        // Keep what a later step is made from; release every image after its last use.
        var lastUse: [Source: Int] = [:]
        for (n, step) in steps.enumerated() { lastUse[step.source] = n }
        for n in steps.indices {
            if case .version(let index) = steps[n].work, lastUse[.version(index)] != nil {
                steps[n].kept = true
            }
        }
        for (source, n) in lastUse.sorted(by: { Self.releaseOrder($0.key) < Self.releaseOrder($1.key) }) {
            steps[n].releases.append(source)
        }
        self.base = base
        self.steps = steps
    }

    /// The size a version comes out at (see ``VersionSpec``): a `.fit` from the picture's own
    /// size, a `.cover` exactly its box.
    static func outputSize(_ spec: VersionSpec, width: Int, height: Int) -> PixelSize {
        switch spec.mode {
        case .fit:
            let size = Geometry.fit(width: width, height: height, boxWidth: spec.width, boxHeight: spec.height)
            return PixelSize(size.width, size.height)
        case .cover:
            return PixelSize(spec.width, spec.height)
        }
    }

    /// Whether `spec` is a `.cover` that cuts part of a `width`×`height` picture away (so its
    /// place is chosen by attention).
    static func cuts(_ spec: VersionSpec, width: Int, height: Int) -> Bool {
        guard spec.mode == .cover else { return false }
        let region = Geometry.coverRegion(width: width, height: height, boxWidth: spec.width, boxHeight: spec.height)
        return region.width < width || region.height < height
    }

    /// Whether a whole picture of `source`'s size makes `spec` without upscaling.
    static func suffices(_ source: PixelSize, for spec: VersionSpec, output: PixelSize) -> Bool {
        switch spec.mode {
        case .fit:
            return source.covers(output)
        case .cover:
            let region = Geometry.coverRegion(width: source.width, height: source.height,
                                              boxWidth: spec.width, boxHeight: spec.height)
            return PixelSize(region.width, region.height).covers(output)
        }
    }

    /// The smallest available image that `enough` accepts (the earliest of equal sizes, so the
    /// base before a version of its size); the base when none does: it is the largest there
    /// is, the only one a version may be upscaled from.
    static func smallest(_ available: [(source: Source, size: PixelSize)],
                         where enough: (PixelSize) -> Bool) -> Source {
        var best: (source: Source, pixels: Int)?
        for candidate in available where enough(candidate.size) {
            if let current = best, current.pixels <= candidate.size.pixels { continue }
            best = (candidate.source, candidate.size.pixels)
        }
        return best?.source ?? .base
    }

    /// Releases listed base first, then versions by index (a stable order for tests and logs).
    private static func releaseOrder(_ source: Source) -> Int {
        switch source {
        case .base: -1
        case .version(let index): index
        }
    }
}
