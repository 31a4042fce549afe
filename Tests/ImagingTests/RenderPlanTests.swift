import Testing
@testable import Imaging

// Which image each version is made from, without libvips (issue 14: decode once at the
// largest size, derive the rest from the smallest image in memory that is large enough).
struct RenderPlanTests {
    typealias Step = RenderPlan.Step

    @Test func frameScreensAreAllMadeFromHd() {
        // The media service's set for two frame screens on a 2560×1600 photo: hd is the
        // largest, so the base IS hd, and every other version comes from it. 1280×800 has the
        // picture's shape (no crop, no attention); 1024×600 cuts rows, placed by attention.
        let specs: [VersionSpec] = [.fit(300, 300), .fit(1920, 1080), .cover(1024, 600), .cover(1280, 800)]
        let plan = RenderPlan(specs: specs, width: 2560, height: 1600, attentionSide: 512)
        #expect(plan.base == PixelSize(1728, 1080))
        #expect(plan.steps == [
            Step(work: .version(1), source: .base, size: PixelSize(1728, 1080)),
            Step(work: .version(3), source: .base, size: PixelSize(1280, 800)),
            Step(work: .attention, source: .base, size: PixelSize(512, 320)),
            Step(work: .version(2), source: .base, size: PixelSize(1024, 600)),
            Step(work: .version(0), source: .base, size: PixelSize(300, 188), releases: [.base]),
        ])
    }

    @Test func aPortraitCoverNeedsTheFullPictureAndTheRestComeFromHd() {
        // 1080×1920 on a landscape photo needs more than the full height: the base is the
        // full picture, used for the portrait cover and hd only; hd is kept for the
        // landscape cover and the thumbnail, and the base released as soon as hd is made.
        let specs: [VersionSpec] = [.fit(300, 300), .fit(1920, 1080), .cover(1024, 600), .cover(1080, 1920)]
        let plan = RenderPlan(specs: specs, width: 2560, height: 1600, attentionSide: 512)
        #expect(plan.base == PixelSize(2560, 1600))
        #expect(plan.steps == [
            Step(work: .attention, source: .base, size: PixelSize(512, 320)),
            Step(work: .version(3), source: .base, size: PixelSize(1080, 1920)),
            Step(work: .version(1), source: .base, size: PixelSize(1728, 1080), kept: true, releases: [.base]),
            Step(work: .version(2), source: .version(1), size: PixelSize(1024, 600)),
            Step(work: .version(0), source: .version(1), size: PixelSize(300, 188), releases: [.version(1)]),
        ])
    }

    @Test func hdAloneOfTwelveMegapixelsIsOneResize() {
        let plan = RenderPlan(specs: [.fit(1920, 1080)], width: 4256, height: 2832, attentionSide: 512)
        #expect(plan.base == PixelSize(1623, 1080))
        #expect(plan.steps == [Step(work: .version(0), source: .base, size: PixelSize(1623, 1080), releases: [.base])])
    }

    @Test func aCoverAsLargestVersionGetsABaseHoldingItsBox() {
        // 600×600 needs 0.375 of 2560×1600: the base is 960×600, whose cover region is the box.
        let plan = RenderPlan(specs: [.cover(600, 600), .fit(300, 300)], width: 2560, height: 1600, attentionSide: 512)
        #expect(plan.base == PixelSize(960, 600))
        #expect(plan.steps == [
            Step(work: .attention, source: .base, size: PixelSize(512, 320)),
            Step(work: .version(0), source: .base, size: PixelSize(600, 600)),
            Step(work: .version(1), source: .base, size: PixelSize(300, 188), releases: [.base]),
        ])
    }

    @Test func aSmallPictureIsTheBaseAndTheOnlyOneUpscaledFrom() {
        let specs: [VersionSpec] = [.fit(1920, 1080), .cover(1080, 1920), .fit(100, 100)]
        let plan = RenderPlan(specs: specs, width: 320, height: 200, attentionSide: 512)
        #expect(plan.base == PixelSize(320, 200))
        #expect(plan.steps == [
            // The attention copy is never larger than the base.
            Step(work: .attention, source: .base, size: PixelSize(320, 200)),
            Step(work: .version(1), source: .base, size: PixelSize(1080, 1920)),
            Step(work: .version(0), source: .base, size: PixelSize(320, 200)),
            Step(work: .version(2), source: .base, size: PixelSize(100, 63), releases: [.base]),
        ])
    }

    @Test func aScreenOfThePicturesShapeNeedsNoAttention() {
        let plan = RenderPlan(specs: [.cover(1024, 640)], width: 2560, height: 1600, attentionSide: 512)
        #expect(plan.steps == [Step(work: .version(0), source: .base, size: PixelSize(1024, 640), releases: [.base])])
    }

    /// Every plan, whatever the versions and the picture: each version made once, from an
    /// image made before it, large enough, still in memory; the attention copy before the
    /// first cover that cuts the picture; every image released once, after its last use.
    @Test func plansHoldTheirInvariants() {
        var random = SeededRandom(seed: 14)
        for _ in 0..<2000 {
            let width = random.next(in: 1...6000), height = random.next(in: 1...6000)
            let specs = (0..<random.next(in: 1...6)).map { _ in
                VersionSpec(width: random.next(in: 1...4000), height: random.next(in: 1...4000),
                            mode: random.next(in: 0...1) == 0 ? .fit : .cover)
            }
            let plan = RenderPlan(specs: specs, width: width, height: height, attentionSide: 512)
            let context = "\(specs.map { "\($0.mode.rawValue) \($0.width)x\($0.height)" }) of \(width)x\(height)"
            check(plan, specs: specs, width: width, height: height, context)
        }
    }

    func check(_ plan: RenderPlan, specs: [VersionSpec], width: Int, height: Int, _ context: String) {
        #expect(PixelSize(width, height).covers(plan.base), "\(context)")
        var made: [RenderPlan.Source: PixelSize] = [.base: plan.base]
        var released: Set<RenderPlan.Source> = []
        var versions: [Int] = []
        var attentionSeen = false
        for step in plan.steps {
            guard let sourceSize = made[step.source] else {
                Issue.record("\(context): \(step.source) used before it is made")
                return
            }
            #expect(!released.contains(step.source), "\(context): \(step.source) used after its release")
            switch step.work {
            case .attention:
                #expect(!attentionSeen, "\(context): two attention copies")
                attentionSeen = true
                #expect(sourceSize.covers(step.size), "\(context): attention copy upscaled")
            case .version(let index):
                versions.append(index)
                let spec = specs[index]
                #expect(step.size == RenderPlan.outputSize(spec, width: width, height: height), "\(context)")
                switch spec.mode {
                case .fit:
                    // The base is at the largest scale: it holds every .fit.
                    #expect(sourceSize.covers(step.size), "\(context): fit \(index) upscaled from \(step.source)")
                    made[.version(index)] = step.size
                case .cover:
                    if RenderPlan.cuts(spec, width: width, height: height) {
                        #expect(attentionSeen, "\(context): cover \(index) before the attention copy")
                    }
                    if step.source != .base {
                        #expect(RenderPlan.suffices(sourceSize, for: spec, output: step.size), "\(context)")
                    }
                    #expect(!step.kept, "\(context): covers are never sources")
                }
            }
            if case .version(let index) = step.work, step.kept {
                #expect(plan.steps.contains { $0.source == .version(index) }, "\(context): kept but unused")
            }
            for source in step.releases {
                #expect(released.insert(source).inserted, "\(context): \(source) released twice")
            }
        }
        #expect(versions.sorted() == Array(specs.indices), "\(context): every version exactly once")
        #expect(attentionSeen == specs.contains { RenderPlan.cuts($0, width: width, height: height) }, "\(context)")
        #expect(released.contains(.base), "\(context): the base is never released")
        // Each used source is released exactly at its last use.
        for (n, step) in plan.steps.enumerated() {
            let later = plan.steps[(n + 1)...].contains { $0.source == step.source }
            #expect(later != step.releases.contains(step.source), "\(context): \(step.source) released at the wrong step")
        }
    }
}

/// A small deterministic generator (SplitMix64), so a failing plan can be reproduced.
struct SeededRandom {
    var state: UInt64
    init(seed: UInt64) { state = seed }

    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }

    mutating func next(in range: ClosedRange<Int>) -> Int {
        range.lowerBound + Int(next() % UInt64(range.count))
    }
}
