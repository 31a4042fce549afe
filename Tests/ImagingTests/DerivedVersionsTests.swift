import Foundation
import FramecastTesting
import Logging
import Testing
@testable import Imaging

/// The media service's versions for two frame screens (the resize benchmark's set):
/// thumbnail, hd and two landscape covers that hd holds.
let frameVersions: [VersionSpec] = [.fit(300, 300), .fit(1920, 1080), .cover(1024, 600), .cover(1280, 800)]

/// The same plus a portrait screen, whose cover needs the full picture: the base is then the
/// full decode, hd is kept as the source of the smaller versions.
let frameVersionsWithPortrait: [VersionSpec] = frameVersions + [.cover(1080, 1920)]

// Issue 14: versions derived from the largest image in memory instead of each from the full
// decode keep their sizes, orientation and crops.
@Suite struct DerivedVersionsTests {
    let imaging = sharedImaging

    // MARK: Sizes

    @Test(arguments: Photos.plasmaNames)
    func derivedVersionsKeepTheirSizes(_ name: String) async throws {
        let rendered = try await imaging.render(photo(name), versions: frameVersionsWithPortrait)
        #expect(rendered.map(\.spec) == frameVersionsWithPortrait)
        #expect(rendered.map { "\($0.width)x\($0.height)" } == ["300x188", "1728x1080", "1024x600", "1280x800", "1080x1920"])
        for image in rendered {
            #expect(try await imaging.probe(image.bytes) == ImageHeader(format: .jpeg, width: image.width, height: image.height))
        }
    }

    @Test func derivedVersionsShowWhatEachVersionAloneShows() async throws {
        // Each version rendered on its own comes from its own decode (nothing derived): the
        // derived ones show the same picture.
        let bytes = try photo("Kite")
        let derived = try await imaging.render(bytes, versions: frameVersionsWithPortrait)
        for (spec, version) in zip(frameVersionsWithPortrait, derived) {
            let alone = try await imaging.render(bytes, versions: [spec])[0]
            #expect(alone.width == version.width && alone.height == version.height)
            let (w, h) = smallSize(version)
            let a = try await imaging.pixels(alone.bytes, width: w, height: h)
            let b = try await imaging.pixels(version.bytes, width: w, height: h)
            #expect(a.meanAbsoluteDifference(to: b) < 3, "\(spec)")
        }
    }

    // MARK: Orientation

    @Test(arguments: 1...8)
    func derivedVersionsOfRotatedPhotosComeOutUpright(_ orientation: Int) async throws {
        let upright = try photo("FallenLeaf")
        let rotated = try await imaging.withOrientation(upright, orientation: orientation)
        let expected = try await imaging.render(upright, versions: frameVersionsWithPortrait)
        let actual = try await imaging.render(rotated, versions: frameVersionsWithPortrait)
        #expect(actual.map { "\($0.width)x\($0.height)" } == expected.map { "\($0.width)x\($0.height)" })
        for (a, e) in zip(actual, expected) {
            #expect(try await imaging.probe(a.bytes).orientation == 1)
            let (w, h) = smallSize(a)
            let pa = try await imaging.pixels(a.bytes, width: w, height: h)
            let pe = try await imaging.pixels(e.bytes, width: w, height: h)
            #expect(pa.meanAbsoluteDifference(to: pe) < 6, "orientation \(orientation), \(a.spec)")
            // The measure tells orientations apart.
            #expect(rotated180(pe).meanAbsoluteDifference(to: pe) > 10, "\(a.spec)")
        }
    }

    // MARK: Crops against a search on the full picture

    /// Generated pictures with one clear subject (a saturated red disc on grey) at known
    /// places, near the middle, the edges and a corner.
    static let discs: [(x: Int, y: Int)] = [(300, 500), (1300, 250), (800, 800), (1500, 900), (800, 500)]

    @Test(arguments: discs.indices)
    func coverCropsOfGeneratedPicturesStayWhereAFullSearchPutsThem(_ index: Int) async throws {
        let disc = Self.discs[index]
        let png = Self.discPicture(width: 1600, height: 1000, centre: disc, radius: 60)
        let comparisons = try await compareCrops(png, boxes: Self.boxes)
        for c in comparisons {
            #expect(c.libvipsPlacementHolds, "\(c)")
            // libvips finds attention on a 32×32 reduction of its input, so a disc centred on
            // a boundary of that grid (y = 500 of 1000 is one) is a tie either search may break
            // either way: there the two crops may differ by one grid cell, in version pixels.
            let cellX = 1600.0 / 32 * Double(c.box.width) / Double(c.region.width)
            let cellY = 1000.0 / 32 * Double(c.box.height) / Double(c.region.height)
            #expect(c.errorX <= max(Self.tolerance, cellX + 1) && c.errorY <= max(Self.tolerance, cellY + 1),
                    "disc at \(disc): \(c)")
        }
        // The whole render places its covers the same way (within those pixels).
        let rendered = try await imaging.render(png, versions: Self.boxes.map { .cover($0.width, $0.height) })
        let today = try await fullSearchCovers(png, boxes: Self.boxes)
        for (version, reference) in zip(rendered, today) {
            let (w, h) = smallSize(version)
            let a = try await imaging.pixels(version.bytes, width: w, height: h)
            let b = try await imaging.pixels(reference, width: w, height: h)
            #expect(a.meanAbsoluteDifference(to: b) < 4, "disc at \(disc), \(version.spec)")
        }
    }

    @Test(arguments: Photos.plasmaNames)
    func coverCropsOfRealPhotosStayWhereAFullSearchPutsThem(_ name: String) async throws {
        let comparisons = try await compareCrops(photo(name), boxes: Self.boxes)
        for c in comparisons {
            #expect(c.libvipsPlacementHolds, "\(name): \(c)")
            #expect(c.errorX <= Self.tolerance && c.errorY <= Self.tolerance, "\(name): \(c)")
        }
    }

    /// "Within a few pixels", in pixels of the version (the half copy pixel of the mapping,
    /// about 2.5 source pixels here, times the cover's scale, plus libvips' own rounding).
    static let tolerance = 6.0

    /// Screens of every shape: square, portrait (the region is a narrow column), landscape
    /// wider than the picture (a band of rows), the picture's own shape (no crop at all).
    static let boxes = [PixelSize(600, 600), PixelSize(1080, 1920), PixelSize(1024, 600), PixelSize(1280, 800)]

    struct CropComparison: Sendable, CustomStringConvertible {
        var box: PixelSize
        var region: PixelSize
        /// libvips' crop of the full picture, and the attention centre it found.
        var full: Attention
        /// The production crop, in source pixels, and the source's size.
        var derived: Imaging.Crop
        var source: PixelSize
        /// The difference of the two crops' origins, in pixels of the version.
        var errorX: Double
        var errorY: Double
        /// libvips' crop origin is its attention centre minus half the region, clipped:
        /// the rule ``Geometry/coverOrigin(attention:copy:region:source:)`` follows.
        var libvipsPlacementHolds: Bool

        var description: String {
            "\(box): full search \(full.left),\(full.top) (centre \(full.x),\(full.y)) of region \(region); "
                + "derived \(derived.left),\(derived.top) of \(source); error \(errorX), \(errorY) px"
        }
    }

    /// For each box: the crop libvips' attention search chooses on the full-size upright
    /// picture (how covers were placed before issue 14: the search ran on the full decode),
    /// against the production crop: the cover's source as the render plan picks it with hd in
    /// the set (hd itself for landscape covers), placed by attention on the 512-px copy.
    func compareCrops(_ bytes: [UInt8], boxes: [PixelSize]) async throws -> [CropComparison] {
        try await imaging.run {
            try Imaging.withInput(bytes) { input in
                let probed = try Imaging.readHeader(input, limits: ImagingLimits())
                let (width, height) = (probed.header.uprightWidth, probed.header.uprightHeight)
                let full = try Imaging.decodeBase(input, probed: probed, size: PixelSize(width, height), keepAlpha: false).image
                return try boxes.map { box in
                    let region = Geometry.coverRegion(width: width, height: height, boxWidth: box.width, boxHeight: box.height)
                    let today = try full.attention(width: region.width, height: region.height)
                    let placementHolds = today.left == min(max(0, today.x - region.width / 2), width - region.width)
                        && today.top == min(max(0, today.y - region.height / 2), height - region.height)

                    let specs: [VersionSpec] = [.fit(1920, 1080), .cover(box.width, box.height)]
                    let plan = RenderPlan(specs: specs, width: width, height: height, attentionSide: Imaging.attentionSide)
                    guard let coverStep = plan.steps.first(where: { $0.work == .version(1) }) else {
                        throw ImagingError(.processingFailed, "no cover step in \(plan)")
                    }
                    let sourceSize = coverStep.source == .base ? plan.base
                        : RenderPlan.outputSize(specs[0], width: width, height: height)
                    let source = try full.resized(width: sourceSize.width, height: sourceSize.height).materialised()
                    // The plan's attention copy (none when the cover does not cut the picture).
                    let attention = try plan.steps.first(where: { $0.work == .attention }).map { step in
                        try source.resized(width: step.size.width, height: step.size.height).materialised()
                    }
                    let crop = try Imaging.coverCrop(sourceWidth: source.width, sourceHeight: source.height, box: box, attention: attention)

                    // Both origins in full-picture pixels, the difference scaled to the version.
                    let left = Double(crop.left) * Double(width) / Double(source.width)
                    let top = Double(crop.top) * Double(height) / Double(source.height)
                    return CropComparison(
                        box: box, region: PixelSize(region.width, region.height), full: today, derived: crop,
                        source: PixelSize(source.width, source.height),
                        errorX: abs(left - Double(today.left)) * Double(box.width) / Double(region.width),
                        errorY: abs(top - Double(today.top)) * Double(box.height) / Double(region.height),
                        libvipsPlacementHolds: placementHolds)
                }
            }
        }
    }

    /// The covers as they were made before issue 14: libvips' attention crop of the full-size
    /// decode, scaled to the box, encoded like a version.
    func fullSearchCovers(_ bytes: [UInt8], boxes: [PixelSize]) async throws -> [[UInt8]] {
        try await imaging.run {
            try Imaging.withInput(bytes) { input in
                let probed = try Imaging.readHeader(input, limits: ImagingLimits())
                let (width, height) = (probed.header.uprightWidth, probed.header.uprightHeight)
                let full = try Imaging.decodeBase(input, probed: probed, size: PixelSize(width, height), keepAlpha: false).image
                return try boxes.map { box in
                    let region = Geometry.coverRegion(width: width, height: height, boxWidth: box.width, boxHeight: box.height)
                    let today = try full.attention(width: region.width, height: region.height)
                    let image = try full.extracted(left: today.left, top: today.top, width: region.width, height: region.height)
                        .resized(width: box.width, height: box.height)
                    return try Imaging.encodeVersion(image, spec: .cover(box.width, box.height), encoder: EncoderSettings()).bytes
                }
            }
        }
    }

    /// An RGB PNG: mid grey with a saturated red disc.
    static func discPicture(width: Int, height: Int, centre: (x: Int, y: Int), radius: Int) -> [UInt8] {
        let rows = (0..<height).map { y -> [UInt8] in
            var row = [UInt8](repeating: 128, count: width * 3)
            let dy = y - centre.y
            guard abs(dy) <= radius else { return row }
            for x in max(0, centre.x - radius)..<min(width, centre.x + radius + 1) {
                let dx = x - centre.x
                if dx * dx + dy * dy <= radius * radius {
                    row[3 * x] = 220; row[3 * x + 1] = 20; row[3 * x + 2] = 30
                }
            }
            return row
        }
        return PNGWriter.image(width: width, height: height, bitDepth: 8, colorType: 2, rows: rows)
    }

    // MARK: Memory

    @Test func noFullSizeIntermediateIsHeldWhenHdIsTheLargestVersion() async throws {
        let logs = CapturedLogs()
        let own = Imaging(threads: 1, logger: logs.logger)
        defer { own.shutdown() }
        _ = try await own.render(photo("FallenLeaf"), versions: frameVersions)
        let record = try #require(logs.metadata(of: "rendered versions").first)
        #expect(record["imaging.decoded"] == "2560x1600")
        #expect(record["imaging.base"] == "1728x1080")
        // hd (1728×1080×3) and the 512×320 attention copy; a full-size intermediate alone
        // would be 12 MB.
        let held = try #require(record["imaging.held_mb"].flatMap { Double($0) })
        #expect(held <= 6.2, "held \(held) MB")

        // With a portrait screen the full picture is the base, released once hd is made.
        _ = try await own.render(photo("FallenLeaf"), versions: frameVersionsWithPortrait)
        let portrait = try #require(logs.metadata(of: "rendered versions").last)
        #expect(portrait["imaging.base"] == "2560x1600")
        let heldPortrait = try #require(portrait["imaging.held_mb"].flatMap { Double($0) })
        #expect(heldPortrait <= 18.4, "held \(heldPortrait) MB (base 11.7 + hd 5.3 + attention 0.5)")
    }

    @Test func twelveMegapixelJPEGDecodesAtHalfSizeForHd() async throws {
        // A 4256×2832 JPEG (the benchmark's 12 MP frame) made from a real photo.
        let logs = CapturedLogs()
        let own = Imaging(threads: 1, logger: logs.logger)
        defer { own.shutdown() }
        let twelve = try await own.render(photo("FallenLeaf"), versions: [.cover(4256, 2832, .jpeg(quality: 90))])[0].bytes
        #expect(try await own.probe(twelve) == ImageHeader(format: .jpeg, width: 4256, height: 2832))
        let hd = try await own.render(twelve, versions: [.fit(1920, 1080)])
        #expect(hd.map { "\($0.width)x\($0.height)" } == ["1623x1080"])
        let record = try #require(logs.metadata(of: "rendered versions").last)
        #expect(record["imaging.decoded"] == "2128x1416")
        #expect(record["imaging.base"] == "1623x1080")
    }
}

/// A small comparison size of a version's shape (about 64 pixels on its long side).
func smallSize(_ image: RenderedImage) -> (width: Int, height: Int) {
    let long = max(image.width, image.height)
    return (max(1, image.width * 64 / long), max(1, image.height * 64 / long))
}
