// The tissue analysis's spec: its parameters (the analysis: ../tissue.cpp).
#include "worker/analysis/spec/spec.hpp"

namespace iaserve::analysis {

const Spec& tissue_spec() {
  static const Spec spec{
    "tissue",
    "Tissue detection: outlines of the tissue regions, tissue area and slide coverage",
    {InputType::whole_slide, InputType::tagged_polygon, InputType::multi_area},
    {
        {"method", ParamType::choice, std::string("otsu_saturation"), {}, {}, {"otsu_saturation", "otsu_od"},
         "threshold on saturation (H&E, IHC) or on optical density (pale or grey stains)"},
        {"target_mpp", ParamType::number, 8.0, 1.0, 64.0, {},
         "resolution to analyse at, um/px (rounded to a power-of-two downsample)"},
        {"min_region_um2", ParamType::number, 20000.0, 0.0, 1e9, {},
         "regions smaller than this are dropped and holes smaller than this filled, um^2"},
        {"simplify_tolerance_px", ParamType::number, 1.0, 0.0, 100.0, {},
         "outline simplification tolerance, in analysis pixels"},
        {"max_points", ParamType::integer, std::int64_t{4000}, 16.0, 1e6, {},
         "most outline points in the result; outlines are simplified further to fit"},
    },
    "1.0",
    {},
    {},
};
  return spec;
}

}  // namespace iaserve::analysis
