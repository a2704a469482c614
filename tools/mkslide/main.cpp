// mkslide: writes a synthetic H&E-like whole-slide image (Aperio-style SVS
// or generic pyramidal TIFF) and <out>.truth.json with its ground truth.
//
// Exit codes: 0 written, 1 writing failed, 2 bad command line (CLI11).
#include <CLI/CLI.hpp>

#include <chrono>
#include <cstdio>
#include <fstream>
#include <iostream>

#include <boost/json/serialize.hpp>

#include "iaapi/version.hpp"
#include "scene.hpp"
#include "writer.hpp"

int main(int argc, char** argv) {
  CLI::App app{
      "mkslide: write a synthetic whole-slide image with known ground truth.\n"
      "Content looks like H&E: white background, tissue regions (pink stroma,\n"
      "purple nuclei), optional pen mark and dust; the same --seed gives the same\n"
      "slide. Beside OUTPUT goes OUTPUT.truth.json: size, mpp, tissue fraction,\n"
      "tissue area in mm² and the regions' outlines in level-0 pixels.\n"
      "Exit codes: 0 written, 1 writing failed, 2 bad command line."};
  app.set_version_flag("--version", std::string("mkslide ") + iaserve::kSoftwareVersion);
  mkslide::SceneOptions scene;
  mkslide::WriteOptions write;
  std::string out, format = "svs", bigtiff = "auto";
  bool rgb = false;
  app.add_option("output", out, "Slide file to write (e.g. slide.svs, slide.tif)")->required();
  app.add_option("--width", scene.width, "Level-0 width in pixels")->check(CLI::Range(256, 100000))->capture_default_str();
  app.add_option("--height", scene.height, "Level-0 height in pixels")->check(CLI::Range(256, 100000))->capture_default_str();
  app.add_option("--format", format, "svs: Aperio-style (JPEG tiles, 4x levels, thumbnail, label, macro); "
                                     "tiff: generic pyramidal tiled TIFF (2x levels, resolution in px/cm)")
      ->check(CLI::IsMember({"svs", "tiff"}))
      ->capture_default_str();
  app.add_option("--tile-size", write.tile_size, "Tile side in pixels (multiple of 16)")->capture_default_str();
  app.add_option("--mpp", scene.mpp, "Micrometres per level-0 pixel")->check(CLI::Range(0.05, 50.0))->capture_default_str();
  app.add_option("--seed", scene.seed, "Seed of the content (same seed, same slide)")->capture_default_str();
  app.add_option("--quality", write.quality, "JPEG quality of the tiles")->check(CLI::Range(1, 100))->capture_default_str();
  app.add_flag("--pen", scene.pen, "Add a green pen mark around a region (not tissue)");
  app.add_flag("--dust", scene.dust, "Add dust specks on the glass (not tissue)");
  app.add_option("--label-text", write.label_text, "Text on the label image (svs)")->capture_default_str();
  app.add_flag("--rgb-jpeg", rgb, "JPEG tiles hold RGB, photometric RGB, no Adobe marker (as some Aperio files)");
  app.add_option("--bigtiff", bigtiff, "auto: BigTIFF when the file may pass 4 GB; yes; no")
      ->check(CLI::IsMember({"auto", "yes", "no"}))
      ->capture_default_str();
  app.add_option("--threads", write.threads, "Threads generating and encoding tiles (0: all cores)")->capture_default_str();
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e) == 0 ? 0 : 2;  // --help and --version exit 0
  }

  write.format = format == "svs" ? mkslide::Format::svs : mkslide::Format::tiff;
  write.rgb_jpeg = rgb;
  write.bigtiff = bigtiff == "auto" ? -1 : bigtiff == "yes" ? 1 : 0;
  try {
    const auto start = std::chrono::steady_clock::now();
    mkslide::Scene sc(scene);
    boost::json::object truth = sc.truth();
    boost::json::object facts = mkslide::write_slide(sc, out, write);
    for (auto& kv : facts) truth[kv.key()] = kv.value();
    truth["file"] = std::filesystem::path(out).filename().string();
    const std::string truth_path = out + ".truth.json";
    std::ofstream tf(truth_path, std::ios::trunc);
    tf << boost::json::serialize(truth) << "\n";
    tf.close();
    if (!tf) throw std::runtime_error(truth_path + ": write failed");
    const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    std::printf("wrote %s (%lldx%lld, %s, tissue %.2f%%, %.3f mm²) in %.2f s\n", out.c_str(),
                static_cast<long long>(scene.width), static_cast<long long>(scene.height), format.c_str(),
                truth["tissue_fraction"].as_double() * 100, truth["tissue_area_mm2"].as_double(), secs);
    return 0;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "mkslide: %s\n", e.what());
    return 1;
  }
}
