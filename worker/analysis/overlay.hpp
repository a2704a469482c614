#pragma once
// A picture of an analysis outcome for people: a thumbnail of the slide
// with the outcome's shapes and labels (and the drawn input regions) on it.
#include "worker/analysis/analysis.hpp"
#include "worker/slide/image.hpp"

namespace iaserve::analysis {

// The slide scaled to fit max_side, input regions in blue, the outcome's
// rings in green with their labels.
slide::Image render_overlay(const slide::Slide& slide, const Outcome& outcome,
                            const Input& input = {}, int max_side = 1024);

}  // namespace iaserve::analysis
