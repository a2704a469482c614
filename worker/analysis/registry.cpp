// The built-in analyses, in the order they are listed. Adding one: its spec
// in spec/ (a line in specs() there too), a new file exporting its
// Descriptor, plus one line here.
#include "worker/analysis/analysis.hpp"

namespace iaserve::analysis {

extern const Descriptor tissue_analysis;
extern const Descriptor exec_analysis;

namespace {
const Descriptor* const kAnalyses[] = {
    &tissue_analysis,
    &exec_analysis,
};
}  // namespace

std::span<const Descriptor* const> all() { return kAnalyses; }

}  // namespace iaserve::analysis
