import Testing
@testable import Imaging

// The documented size arithmetic, without libvips.
struct GeometryTests {
    @Test func fitKeepsAspectAndRoundsHalfUp() {
        #expect(Geometry.fit(width: 2560, height: 1600, boxWidth: 300, boxHeight: 300) == (300, 188))
        #expect(Geometry.fit(width: 2560, height: 1600, boxWidth: 1920, boxHeight: 1080) == (1728, 1080))
        #expect(Geometry.fit(width: 1600, height: 2560, boxWidth: 300, boxHeight: 300) == (188, 300))
        #expect(Geometry.fit(width: 1000, height: 3, boxWidth: 100, boxHeight: 100) == (100, 1))
        #expect(Geometry.fit(width: 3, height: 1000, boxWidth: 100, boxHeight: 100) == (1, 100))
    }

    @Test func fitNeverUpscales() {
        #expect(Geometry.fit(width: 320, height: 200, boxWidth: 1920, boxHeight: 1080) == (320, 200))
        #expect(Geometry.fit(width: 1920, height: 1080, boxWidth: 1920, boxHeight: 1080) == (1920, 1080))
    }

    @Test func coverRegionHasTheBoxAspect() {
        #expect(Geometry.coverRegion(width: 2560, height: 1600, boxWidth: 1024, boxHeight: 600) == (2560, 1500))
        #expect(Geometry.coverRegion(width: 2560, height: 1600, boxWidth: 1080, boxHeight: 1920) == (900, 1600))
        #expect(Geometry.coverRegion(width: 2560, height: 1600, boxWidth: 1600, boxHeight: 1000) == (2560, 1600))
        #expect(Geometry.coverRegion(width: 10, height: 10, boxWidth: 1000, boxHeight: 1) == (10, 1))
    }

    @Test func intermediateIsTheLargestNeededSize() {
        let thumbOnly = Geometry.intermediate(for: [.fit(300, 300)], width: 5120, height: 2880)
        #expect(thumbOnly == (300, 169))
        let mixed = Geometry.intermediate(for: [.fit(300, 300), .fit(1920, 1080), .cover(1024, 600)], width: 5120, height: 2880)
        #expect(mixed == (1920, 1080))
        // A portrait frame on a landscape photo needs the full height: no shrink.
        let portrait = Geometry.intermediate(for: [.cover(1080, 1920)], width: 2560, height: 1600)
        #expect(portrait == (2560, 1600))
    }

    @Test func coverOriginCentresTheRegionOnTheMappedAttentionCentre() {
        // A 512×320 copy of a 2560×1600 picture (5 source pixels per copy pixel); the
        // 900×1600 region of a portrait cover. Copy pixel 256 has its centre at 1282.5.
        #expect(Geometry.coverOrigin(attention: (256, 160), copy: (512, 320), region: (900, 1600), source: (2560, 1600)) == (833, 0))
        // Kept inside the picture at both ends.
        #expect(Geometry.coverOrigin(attention: (0, 0), copy: (512, 320), region: (900, 1600), source: (2560, 1600)) == (0, 0))
        #expect(Geometry.coverOrigin(attention: (511, 319), copy: (512, 320), region: (900, 1600), source: (2560, 1600)) == (1660, 0))
        // Rows are placed the same way: a 2560×1500 region moves by at most 100 rows.
        #expect(Geometry.coverOrigin(attention: (100, 300), copy: (512, 320), region: (2560, 1500), source: (2560, 1600)) == (0, 100))
        #expect(Geometry.coverOrigin(attention: (100, 160), copy: (512, 320), region: (2560, 1500), source: (2560, 1600)) == (0, 53))
        // At the copy's own scale: libvips' rule (centre on the point, then clip), within the
        // half pixel of the mapped centre.
        let same = Geometry.coverOrigin(attention: (600, 300), copy: (1000, 1000), region: (500, 500), source: (1000, 1000))
        #expect(abs(same.left - 350) <= 1 && abs(same.top - 50) <= 1)
    }

    @Test func shrinkOnLoadKeepsAtLeastTheNeededSize() {
        #expect(Geometry.jpegShrink(width: 2560, height: 1600, needed: (300, 188)) == 8)
        #expect(Geometry.jpegShrink(width: 2560, height: 1600, needed: (321, 188)) == 4)
        #expect(Geometry.jpegShrink(width: 5120, height: 3200, needed: (1920, 1200)) == 2)
        #expect(Geometry.jpegShrink(width: 2560, height: 1600, needed: (1728, 1080)) == 1)
        #expect(Geometry.webpScale(width: 2560, height: 1600, needed: (1280, 800)) == 0.5)
        #expect(Geometry.webpScale(width: 2560, height: 1600, needed: (2560, 1600)) == nil)
    }
}
