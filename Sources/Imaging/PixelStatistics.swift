import Foundation

/// Pure pixel statistics of ``ImageAnalysis`` (no libvips): dominant colours and the
/// perceptual hash, computed from small RGB thumbnails.
enum PixelStatistics {
    // MARK: Dominant colours

    /// Colours closer than this (Euclidean RGB distance) count as one.
    static let distinctDistance = 40.0

    /// Up to `count` dominant colours of `rgb` (R, G, B bytes), most dominant first:
    /// median cut into 8 boxes, refined by up to 6 rounds of k-means, clusters closer than
    /// ``distinctDistance`` merged. `share` is the fraction of pixels in the cluster, so the
    /// shares sum to at most 1. Deterministic (no random start). Scalar integer arithmetic:
    /// generic SIMD code is ~100× slower in debug builds.
    static func dominantColors(rgb: [UInt8], count: Int = 3) -> [RGBColor] {
        let n = rgb.count / 3
        guard n > 0, count > 0 else { return [] }
        let pixels = (0..<n).map { i in Colour(Double(rgb[3 * i]), Double(rgb[3 * i + 1]), Double(rgb[3 * i + 2])) }
        var centres = medianCut(pixels, boxes: 8)
        var members = [Int](repeating: 0, count: centres.count)
        for _ in 0..<6 {
            var sums = [Colour](repeating: Colour(0, 0, 0), count: centres.count)
            members = [Int](repeating: 0, count: centres.count)
            for p in pixels {
                let k = nearest(p, in: centres)
                sums[k].r += p.r; sums[k].g += p.g; sums[k].b += p.b
                members[k] += 1
            }
            var next: [Colour] = []
            for k in centres.indices where members[k] > 0 {
                let m = Double(members[k])
                next.append(Colour(sums[k].r / m, sums[k].g / m, sums[k].b / m))
            }
            let changed = next != centres
            centres = next
            if !changed { break }
        }
        // Final assignment to the final centres.
        members = [Int](repeating: 0, count: centres.count)
        for p in pixels { members[nearest(p, in: centres)] += 1 }

        // Largest first; merge a cluster into an earlier one it is too close to.
        let order = centres.indices.sorted {
            members[$0] != members[$1] ? members[$0] > members[$1] : centres[$0].sortKey < centres[$1].sortKey
        }
        var kept: [(colour: Colour, members: Int)] = []
        for k in order where members[k] > 0 {
            let c = centres[k]
            if let j = kept.firstIndex(where: { $0.colour.distance(to: c) < distinctDistance }) {
                let a = Double(kept[j].members), b = Double(members[k]), t = a + b
                kept[j].colour = Colour((kept[j].colour.r * a + c.r * b) / t, (kept[j].colour.g * a + c.g * b) / t,
                                        (kept[j].colour.b * a + c.b * b) / t)
                kept[j].members += members[k]
            } else {
                kept.append((c, members[k]))
            }
        }
        kept.sort { $0.members > $1.members }
        func byte(_ v: Double) -> UInt8 { UInt8(max(0, min(255, v.rounded()))) }
        return kept.prefix(count).map { cluster in
            RGBColor(red: byte(cluster.colour.r), green: byte(cluster.colour.g), blue: byte(cluster.colour.b),
                     share: Double(cluster.members) / Double(n))
        }
    }

    struct Colour: Equatable {
        var r, g, b: Double
        init(_ r: Double, _ g: Double, _ b: Double) { self.r = r; self.g = g; self.b = b }
        subscript(channel: Int) -> Double { channel == 0 ? r : channel == 1 ? g : b }
        func squaredDistance(to o: Colour) -> Double {
            let dr = r - o.r, dg = g - o.g, db = b - o.b
            return dr * dr + dg * dg + db * db
        }
        func distance(to o: Colour) -> Double { squaredDistance(to: o).squareRoot() }
        var sortKey: Double { (r * 256 + g) * 256 + b }
    }

    /// Splits the box with the widest channel range at that channel's median until there
    /// are `boxes` boxes or no box can be split; returns each box's mean colour.
    static func medianCut(_ pixels: [Colour], boxes target: Int) -> [Colour] {
        var boxes: [[Colour]] = [pixels]
        func widest(_ box: [Colour]) -> (channel: Int, range: Double) {
            var best = (channel: 0, range: -1.0)
            for channel in 0..<3 {
                var lo = Double.infinity, hi = -Double.infinity
                for p in box { let v = p[channel]; if v < lo { lo = v }; if v > hi { hi = v } }
                if hi - lo > best.range { best = (channel, hi - lo) }
            }
            return best
        }
        while boxes.count < target {
            var best = -1, bestRange = 0.0, bestChannel = 0
            for (i, box) in boxes.enumerated() where box.count > 1 {
                let w = widest(box)
                if w.range > bestRange { best = i; bestRange = w.range; bestChannel = w.channel }
            }
            guard best >= 0 else { break }
            let sorted = boxes[best].sorted { $0[bestChannel] < $1[bestChannel] }
            let middle = sorted.count / 2
            boxes[best] = Array(sorted[..<middle])
            boxes.append(Array(sorted[middle...]))
        }
        return boxes.map { box in
            var r = 0.0, g = 0.0, b = 0.0
            for p in box { r += p.r; g += p.g; b += p.b }
            let m = Double(box.count)
            return Colour(r / m, g / m, b / m)
        }
    }

    static func nearest(_ p: Colour, in centres: [Colour]) -> Int {
        var best = 0, bestDistance = Double.infinity
        for k in centres.indices {
            let d = p.squaredDistance(to: centres[k])
            if d < bestDistance { bestDistance = d; best = k }
        }
        return best
    }

    // MARK: Perceptual hash

    /// The side of the grayscale image the hash is computed from.
    static let hashSide = 32

    /// pHash of a 32×32 RGB image (row-major R, G, B bytes): grayscale (Rec. 601 luma), 2-D
    /// orthonormal DCT-II, the top-left 8×8 coefficients (lowest frequencies); bit
    /// `63 − (8u + v)` is set when coefficient (u, v) is above the median of the 63
    /// coefficients other than DC (0, 0).
    static func perceptualHash(rgb32: [UInt8]) -> UInt64 {
        let side = hashSide
        precondition(rgb32.count == side * side * 3, "the hash needs a 32×32 RGB image")
        var gray = [Double](repeating: 0, count: side * side)
        for i in 0..<(side * side) {
            gray[i] = 0.299 * Double(rgb32[3 * i]) + 0.587 * Double(rgb32[3 * i + 1]) + 0.114 * Double(rgb32[3 * i + 2])
        }
        // basis[u][x] = α(u) cos((2x + 1) u π / 2N)
        let basis: [[Double]] = (0..<8).map { u in
            let alpha = u == 0 ? (1.0 / Double(side)).squareRoot() : (2.0 / Double(side)).squareRoot()
            return (0..<side).map { x in alpha * cos(Double((2 * x + 1) * u) * .pi / Double(2 * side)) }
        }
        // rows[u][x] = Σ_y basis[u][y] · gray[y][x]  (vertical frequency u)
        var rows = [[Double]](repeating: [Double](repeating: 0, count: side), count: 8)
        for u in 0..<8 {
            for y in 0..<side {
                let b = basis[u][y]
                for x in 0..<side { rows[u][x] += b * gray[y * side + x] }
            }
        }
        var coefficients = [Double](repeating: 0, count: 64)
        for u in 0..<8 {
            for v in 0..<8 {
                var sum = 0.0
                for x in 0..<side { sum += basis[v][x] * rows[u][x] }
                coefficients[u * 8 + v] = sum
            }
        }
        let median = coefficients.dropFirst().sorted()[31]
        var hash: UInt64 = 0
        for i in 0..<64 where coefficients[i] > median { hash |= 1 << UInt64(63 - i) }
        return hash
    }
}
