#pragma once
// Realistic IA-API documents, shaped like the messages DPAT and the Sectra
// SDK examples exchange, shared by the round-trip and mutation tests.
#include <string_view>

namespace iaapi_docs {

inline constexpr std::string_view kRegistration = R"({
  "applicationId": "tissue",
  "displayName": "Tissue detection",
  "url": "http://ia-host:5006/apps/tissue",
  "manufacturer": "iaserve",
  "inputTemplate": {"type": "taggedPolygon", "content": {"tags": ["tumour", "stroma"]}},
  "context": {"model": "otsu", "threshold": 0.82}
})";

inline constexpr std::string_view kApplicationInfo =
    R"({"apiVersion": "1.10", "softwareVersion": "4.2.1.1234"})";

inline constexpr std::string_view kInvocationWholeSlide = R"({
  "action": "create",
  "applicationId": "tissue",
  "slideId": "1.2.752.24.10.2954227164.3472380.53.4.1.0",
  "callbackInfo": {
    "url": "https://pacs.example.org/SectraPathologyServer/external/imageanalysis/v1",
    "token": "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJpYSJ9.c2lnbmF0dXJl"
  },
  "context": {"useGPU": false, "seedValue": 42},
  "cancellationToken": "b7a0e0f2-5f5e-4f4c-9d53-8f2e4f0d7c11",
  "input": {"type": "wholeSlide"}
})";

inline constexpr std::string_view kInvocationTaggedPolygon = R"({
  "action": "create",
  "applicationId": "tissue",
  "slideId": "CMU-1-Small-Region",
  "callbackInfo": {"url": "http://127.0.0.1:8080/v1", "token": "abc"},
  "input": {
    "type": "taggedPolygon",
    "content": {
      "polygon": {"points": [{"x": 0.1, "y": 0.2}, {"x": 0.45, "y": 0.2},
                             {"x": 0.45, "y": 0.61}, {"x": 0.1, "y": 0.61}]},
      "tags": ["tumour", "stroma"],
      "tagIndex": 1
    }
  }
})";

inline constexpr std::string_view kInvocationMultiArea = R"({
  "action": "create",
  "applicationId": "tissue",
  "slideId": "CMU-1-Small-Region",
  "callbackInfo": {"url": "http://127.0.0.1:8080/v1", "token": "abc"},
  "context": {"useGPU": true},
  "input": {
    "type": "multiArea",
    "content": {"polygons": [
      {"points": [{"x": 0.1, "y": 0.1}, {"x": 0.2, "y": 0.1}, {"x": 0.2, "y": 0.2}]},
      {"points": [{"x": 0.5, "y": 0.5}, {"x": 0.75, "y": 0.5}, {"x": 0.75, "y": 1.25},
                  {"x": 0.5, "y": 1.25}]}
    ]}
  }
})";

inline constexpr std::string_view kInvocationModify = R"({
  "action": "modify",
  "applicationId": "tissue",
  "slideId": "CMU-1-Small-Region",
  "callbackInfo": {"url": "http://127.0.0.1:8080/v1", "token": "abc"},
  "input": {
    "id": 1234,
    "versionId": "7f3c2a",
    "slideId": "CMU-1-Small-Region",
    "displayResult": "Tissue 42.5 %",
    "displayProperties": {"Tissue area": "3.14 mm2", "Fragments": 3, "Fraction": 0.425},
    "applicationVersion": "0.1.0",
    "attachments": [{"name": "overlay.png", "state": "stored"}],
    "data": {
      "context": {"job": "a1b2"},
      "result": {
        "type": "patchCollection",
        "content": {
          "description": "Tissue patches",
          "polygons": [{"points": [{"x": 0, "y": 0}, {"x": 1, "y": 0}, {"x": 1, "y": 1.3364}]}],
          "patches": [{"tag": 0, "position": {"x": 0.25, "y": 0.5}, "sortKeyValue": 0.93},
                      {"tag": 1, "position": {"x": 0.5, "y": 0.75}, "sortKeyValue": 0.12}],
          "tags": ["tissue", "background"],
          "patchSize": 224,
          "magnification": 20.0,
          "statuses": {"allowVerify": {"value": false, "message": "Analysis still running"}},
          "actions": [{"id": "rerun", "state": 1, "name": "Run again", "tooltip": "Run the analysis again"}]
        }
      }
    },
    "sectraInternal": {"revision": 3}
  }
})";

inline constexpr std::string_view kInvocationDelete = R"({
  "action": "delete",
  "applicationId": "tissue",
  "slideId": "CMU-1-Small-Region",
  "callbackInfo": {"url": "http://127.0.0.1:8080/v1", "token": "abc"},
  "input": {
    "id": 7, "versionId": "v1", "slideId": "CMU-1-Small-Region",
    "displayResult": "done", "displayProperties": {}, "applicationVersion": "0.1.0",
    "data": {}
  }
})";

inline constexpr std::string_view kInvocationCancel = R"({
  "action": "cancel",
  "applicationId": "tissue",
  "slideId": "CMU-1-Small-Region",
  "callbackInfo": {"url": "http://127.0.0.1:8080/v1", "token": "abc"},
  "cancellationToken": "b7a0e0f2"
})";

inline constexpr std::string_view kImageInfo = R"({
  "id": "CMU-1-Small-Region",
  "isStreamable": true,
  "imageSize": {"width": 2220, "height": 2967},
  "tileSize": {"width": 240, "height": 240},
  "micronsPerPixel": 0.499,
  "focalPlanes": [{"id": "0", "offsetUm": 0}],
  "opticalPaths": [{"id": "0", "description": "Brightfield"}],
  "storedTileFormat": {"mimeType": "image/jpeg", "extension": "jpg"},
  "availableTileFormats": [{"mimeType": "image/jpeg", "extension": "jpg"},
                           {"mimeType": "image/png", "extension": "png"}],
  "fileFormat": {"mimeType": "image/x-aperio-svs"},
  "staining": {"displayName": "H&E"},
  "block": {"displayName": "A1"},
  "specimen": {"anatomy": "Skin", "description": "Punch biopsy"},
  "bodyPart": "SKIN",
  "examCode": "PAT01",
  "examDescription": "Histopathology",
  "stationName": "SCANNER-2",
  "priority": 2,
  "qualityControl": {"status": "QualityOk", "versionId": "q1"},
  "seriesInstanceUid": "1.2.752.24.10.2954227164.3472380.53.4",
  "lisSlideId": "S24-1234-A1-1",
  "accessionNumber": "S24-1234",
  "accessionNumberIssuer": "LAB",
  "studyInstanceUid": "1.2.752.24.10.2954227164.3472380",
  "examId": "E-991",
  "examDateTime": "2024-03-05T10:12:00",
  "examFreeFields": [{"name": "Ward", "value": "7B"}],
  "scannerModel": "GT450"
})";

inline constexpr std::string_view kImageNotification = R"({
  "applicationId": "tissue",
  "slideId": "CMU-1-Small-Region",
  "callbackInfo": {"url": "http://127.0.0.1:8080/v1", "token": "abc"},
  "imageInfo": {
    "id": "CMU-1-Small-Region", "isStreamable": true,
    "imageSize": {"width": 2220, "height": 2967}, "tileSize": {"width": 240, "height": 240},
    "micronsPerPixel": 0.499, "focalPlanes": [], "opticalPaths": [],
    "storedTileFormat": {"mimeType": "image/jpeg", "extension": "jpg"},
    "availableTileFormats": [], "fileFormat": {"mimeType": "image/x-aperio-svs"},
    "staining": {"displayName": "H&E"}, "block": {"displayName": "A1"}
  }
})";

// A stored result with the single-object primitive content of Sectra's examples.
inline constexpr std::string_view kStoredResultPrimitiveObject = R"json({
  "id": 55,
  "versionId": "AAAAAAAAB9E=",
  "slideId": "CMU-1-Small-Region",
  "displayResult": "3 regions",
  "displayProperties": {"Regions": 3, "Area": 1.75, "Unit": "mm2"},
  "applicationVersion": "0.1.0",
  "data": {
    "context": {},
    "result": {
      "type": "primitive",
      "content": {
        "style": {"strokeStyle": "#00ff00", "fillStyle": "rgba(0,255,0,0.3)", "size": 2},
        "polygons": [{"points": [{"x": 0.1, "y": 0.1}, {"x": 0.3, "y": 0.1}, {"x": 0.3, "y": 0.4}]}],
        "polylines": [{"points": [{"x": 0.5, "y": 0.5}, {"x": 0.6, "y": 0.7}]}],
        "labels": [{"location": {"x": 0.1, "y": 0.1}, "label": "Region 1"}]
      }
    }
  }
})json";

inline constexpr std::string_view kResultPrimitiveList = R"({
  "slideId": "CMU-1-Small-Region",
  "displayResult": "Tissue 42.5 %",
  "displayProperties": {"Tissue": "42.5 %"},
  "applicationVersion": "0.1.0",
  "data": {
    "context": {"job": "x"},
    "result": {
      "type": "primitive",
      "content": [
        {"style": {"strokeStyle": "#ffb000", "size": 3},
         "polygons": [{"points": [{"x": 0, "y": 0}, {"x": 1, "y": 0}, {"x": 1, "y": 1.3364}, {"x": 0, "y": 1.3364}]}]},
        {"labels": [{"location": {"x": 0.01, "y": 0.01}, "label": "done"}]}
      ]
    }
  }
})";

inline constexpr std::string_view kStoredResultList = R"([
  {"id": 1, "versionId": "a", "slideId": "s1", "displayResult": "queued",
   "displayProperties": {}, "applicationVersion": "0.1.0", "data": {"context": {}}},
  {"id": 2, "versionId": "b", "slideId": "s1", "displayResult": "done",
   "displayProperties": {"n": 1}, "applicationVersion": "0.1.0",
   "data": {"context": {}, "result": {"type": "primitive", "content": []}}}
])";

inline constexpr std::string_view kQualityControl =
    R"({"applicationVersion": "0.1.0", "qualityControl": {"status": "Rejected", "versionId": "q7"}})";

inline constexpr std::string_view kCaseImages = R"([
  {"id": "slide-1", "staining": {"displayName": "H&E"}, "block": {"displayName": "A1"},
   "specimen": {"anatomy": "Colon"}, "seriesInstanceUid": "1.2.3", "lisSlideId": "S1"},
  {"id": "slide-2", "staining": {"displayName": "Ki-67"}, "block": {"displayName": "A2"}}
])";

}  // namespace iaapi_docs
