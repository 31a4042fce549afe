/// Pure size arithmetic of ``VersionSpec`` (no libvips), so the documented rounding is
/// tested on its own. All sizes are of the upright image.
enum Geometry {
    /// `numerator / denominator` rounded half up (non-negative operands).
    static func roundedDivision(_ numerator: Int, _ denominator: Int) -> Int {
        (2 * numerator + denominator) / (2 * denominator)
    }

    /// `.fit`: the largest size inside `box` with the source's aspect ratio, never larger than
    /// the source. The constrained side equals the box side; the other is rounded half up.
    static func fit(width: Int, height: Int, boxWidth: Int, boxHeight: Int) -> (width: Int, height: Int) {
        if width <= boxWidth && height <= boxHeight { return (width, height) }
        // width-constrained when boxWidth / width <= boxHeight / height.
        if boxWidth * height <= boxHeight * width {
            let h = min(boxHeight, max(1, roundedDivision(height * boxWidth, width)))
            return (boxWidth, h)
        } else {
            let w = min(boxWidth, max(1, roundedDivision(width * boxHeight, height)))
            return (w, boxHeight)
        }
    }

    /// `.cover`: the region of a `width`×`height` image that has the box's aspect ratio and is
    /// as large as possible (it is then cropped by attention and scaled to exactly the box).
    static func coverRegion(width: Int, height: Int, boxWidth: Int, boxHeight: Int) -> (width: Int, height: Int) {
        if boxWidth * height >= boxHeight * width {
            // The box is relatively wider: keep the full width, cut rows.
            return (width, min(height, max(1, roundedDivision(width * boxHeight, boxWidth))))
        } else {
            return (min(width, max(1, roundedDivision(height * boxWidth, boxHeight))), height)
        }
    }

    /// Where a `region` of a `source`-sized picture goes when attention was found at `point`
    /// of a `copy`-sized copy of the same picture: centred on the point mapped to the source
    /// (the centre of the copy's pixel, `(p + ½) × source / copy`), rounded, then moved inside
    /// the picture. That is libvips' own placement (centre the crop on the attention centre,
    /// then clip), at the source's scale; the mapping adds at most half a copy pixel
    /// (`source / copy / 2` source pixels) to where a search on the source would put it.
    static func coverOrigin(attention point: (x: Int, y: Int), copy: (width: Int, height: Int),
                            region: (width: Int, height: Int), source: (width: Int, height: Int)) -> (left: Int, top: Int) {
        func place(_ p: Int, _ copySide: Int, _ regionSide: Int, _ sourceSide: Int) -> Int {
            let centre = (Double(p) + 0.5) * Double(sourceSide) / Double(copySide)
            let origin = Int((centre - Double(regionSide) / 2).rounded())
            return min(max(0, origin), max(0, sourceSide - regionSide))
        }
        return (place(point.x, copy.width, region.width, source.width),
                place(point.y, copy.height, region.height, source.height))
    }

    /// The scale of the source a version needs (1 = full resolution; more is an upscale).
    static func neededScale(_ spec: VersionSpec, width: Int, height: Int) -> Double {
        let sx = Double(spec.width) / Double(width)
        let sy = Double(spec.height) / Double(height)
        switch spec.mode {
        case .fit: return min(sx, sy, 1)
        case .cover: return max(sx, sy)
        }
    }

    /// The size to decode once for all `specs`: the source shrunk to the largest scale any
    /// version needs (never above full size), rounded up so no version has to upscale it.
    static func intermediate(for specs: [VersionSpec], width: Int, height: Int) -> (width: Int, height: Int) {
        let scale = min(1, specs.map { neededScale($0, width: width, height: height) }.max() ?? 1)
        if scale >= 1 { return (width, height) }
        let w = min(width, max(1, Int((Double(width) * scale).rounded(.up))))
        let h = min(height, max(1, Int((Double(height) * scale).rounded(.up))))
        return (w, h)
    }

    /// The JPEG shrink-on-load factor (8, 4, 2 or 1): the largest that still decodes at
    /// least `needed` (libjpeg scales in the DCT, far cheaper than decoding and resizing).
    static func jpegShrink(width: Int, height: Int, needed: (width: Int, height: Int)) -> Int {
        for factor in [8, 4, 2] where width / factor >= needed.width && height / factor >= needed.height {
            return factor
        }
        return 1
    }

    /// The WebP scale-on-load (0 < scale < 1), or nil when the full size is needed.
    static func webpScale(width: Int, height: Int, needed: (width: Int, height: Int)) -> Double? {
        let scale = max(Double(needed.width) / Double(width), Double(needed.height) / Double(height))
        return scale < 1 ? scale : nil
    }
}
