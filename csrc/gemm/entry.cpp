// Entry points of the GEMM probe (entry.h): GemmPlan, one GEMM problem (M, N, K, dtype, compute type,
// layout) on one GPU, and what cuBLASLt can do with it: the heuristic's ranked picks, every algorithm id
// with its configurations (tile, stages, split-K, reduction scheme, CTA swizzling, custom option), each
// checked with cublasLtMatmulAlgoCheck, and a way to run / time one configuration on caller-owned device
// buffers. See entry.h for the layout.
#include "entry.h"

#include <pybind11/stl.h>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstring>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "../device_info.h"

#if defined(DRIFTSCOPE_WITH_CUDA) && defined(DRIFTSCOPE_WITH_CUBLASLT)
#include <cublasLt.h>
#include <dlfcn.h>

#include "../cuda_check.h"
#endif

#ifndef DRIFTSCOPE_CUBLASLT_INCLUDE
#define DRIFTSCOPE_CUBLASLT_INCLUDE ""
#endif
#ifndef DRIFTSCOPE_CUBLASLT_REASON
#define DRIFTSCOPE_CUBLASLT_REASON ""
#endif

namespace driftscope {

py::dict gemm_build_info() {
  py::dict d;
#if defined(DRIFTSCOPE_WITH_CUDA) && defined(DRIFTSCOPE_WITH_CUBLASLT)
  d["available"] = true;
  d["reason"] = "";
#else
  d["available"] = false;
#ifndef DRIFTSCOPE_WITH_CUDA
  d["reason"] = std::string("built without CUDA (no nvcc or DRIFTSCOPE_NO_CUDA)");
#else
  d["reason"] = std::string("cublasLt.h not found at build time: ") + DRIFTSCOPE_CUBLASLT_REASON;
#endif
#endif
  d["include_dir"] = std::string(DRIFTSCOPE_CUBLASLT_INCLUDE);
  return d;
}

#if defined(DRIFTSCOPE_WITH_CUDA) && defined(DRIFTSCOPE_WITH_CUBLASLT)

namespace {

// ---- the library, through function pointers -----------------------------------------------------------
struct Lt {
  void* handle = nullptr;
  std::string path;
  size_t version = 0;
  decltype(&cublasLtCreate) Create = nullptr;
  decltype(&cublasLtDestroy) Destroy = nullptr;
  decltype(&cublasLtGetStatusName) GetStatusName = nullptr;
  decltype(&cublasLtGetVersion) GetVersion = nullptr;
  decltype(&cublasLtMatmulDescCreate) DescCreate = nullptr;
  decltype(&cublasLtMatmulDescDestroy) DescDestroy = nullptr;
  decltype(&cublasLtMatmulDescSetAttribute) DescSetAttribute = nullptr;
  decltype(&cublasLtMatrixLayoutCreate) LayoutCreate = nullptr;
  decltype(&cublasLtMatrixLayoutDestroy) LayoutDestroy = nullptr;
  decltype(&cublasLtMatmulPreferenceCreate) PrefCreate = nullptr;
  decltype(&cublasLtMatmulPreferenceDestroy) PrefDestroy = nullptr;
  decltype(&cublasLtMatmulPreferenceSetAttribute) PrefSetAttribute = nullptr;
  decltype(&cublasLtMatmulAlgoGetHeuristic) GetHeuristic = nullptr;
  decltype(&cublasLtMatmulAlgoGetIds) GetIds = nullptr;
  decltype(&cublasLtMatmulAlgoInit) AlgoInit = nullptr;
  decltype(&cublasLtMatmulAlgoCheck) AlgoCheck = nullptr;
  decltype(&cublasLtMatmulAlgoCapGetAttribute) CapGet = nullptr;
  decltype(&cublasLtMatmulAlgoConfigSetAttribute) ConfigSet = nullptr;
  decltype(&cublasLtMatmulAlgoConfigGetAttribute) ConfigGet = nullptr;
  decltype(&cublasLtMatmul) Matmul = nullptr;
};

template <typename F>
void bind(void* h, F& fn, const char* name, std::string& missing) {
  fn = reinterpret_cast<F>(dlsym(h, name));
  if (!fn) missing += (missing.empty() ? "" : ", ") + std::string(name);
}

// The library torch already loaded if any (RTLD_NOLOAD), else the candidates, else the sonames.
const Lt& load_library(const std::vector<std::string>& candidates) {
  static Lt lt;
  if (lt.handle) return lt;
  void* h = nullptr;
  for (const char* so : {"libcublasLt.so.13", "libcublasLt.so.12"}) {
    if ((h = dlopen(so, RTLD_NOW | RTLD_NOLOAD))) break;
  }
  if (!h) h = open_first(candidates, {"libcublasLt.so.13", "libcublasLt.so.12", "libcublasLt.so"});
  if (!h) {
    std::string tried;
    for (const auto& p : candidates) tried += p + " ";
    throw std::runtime_error("cannot load libcublasLt (tried the copy already loaded by torch, " + tried +
                             "and the sonames libcublasLt.so.13/.12)");
  }
  Lt l;
  l.handle = h;
  std::string missing;
  bind(h, l.Create, "cublasLtCreate", missing);
  bind(h, l.Destroy, "cublasLtDestroy", missing);
  bind(h, l.GetStatusName, "cublasLtGetStatusName", missing);
  bind(h, l.GetVersion, "cublasLtGetVersion", missing);
  bind(h, l.DescCreate, "cublasLtMatmulDescCreate", missing);
  bind(h, l.DescDestroy, "cublasLtMatmulDescDestroy", missing);
  bind(h, l.DescSetAttribute, "cublasLtMatmulDescSetAttribute", missing);
  bind(h, l.LayoutCreate, "cublasLtMatrixLayoutCreate", missing);
  bind(h, l.LayoutDestroy, "cublasLtMatrixLayoutDestroy", missing);
  bind(h, l.PrefCreate, "cublasLtMatmulPreferenceCreate", missing);
  bind(h, l.PrefDestroy, "cublasLtMatmulPreferenceDestroy", missing);
  bind(h, l.PrefSetAttribute, "cublasLtMatmulPreferenceSetAttribute", missing);
  bind(h, l.GetHeuristic, "cublasLtMatmulAlgoGetHeuristic", missing);
  bind(h, l.GetIds, "cublasLtMatmulAlgoGetIds", missing);
  bind(h, l.AlgoInit, "cublasLtMatmulAlgoInit", missing);
  bind(h, l.AlgoCheck, "cublasLtMatmulAlgoCheck", missing);
  bind(h, l.CapGet, "cublasLtMatmulAlgoCapGetAttribute", missing);
  bind(h, l.ConfigSet, "cublasLtMatmulAlgoConfigSetAttribute", missing);
  bind(h, l.ConfigGet, "cublasLtMatmulAlgoConfigGetAttribute", missing);
  bind(h, l.Matmul, "cublasLtMatmul", missing);
  if (!missing.empty()) throw std::runtime_error("libcublasLt lacks symbols: " + missing);
  Dl_info info{};
  if (dladdr(reinterpret_cast<void*>(l.Create), &info) && info.dli_fname) l.path = info.dli_fname;
  l.version = l.GetVersion();
  lt = l;
  return lt;
}

std::string status_text(const Lt& lt, cublasStatus_t s) {
  const char* n = lt.GetStatusName ? lt.GetStatusName(s) : nullptr;
  return n ? std::string(n) : ("CUBLAS_STATUS_" + std::to_string(static_cast<int>(s)));
}

void check_lt(const Lt& lt, cublasStatus_t s, const char* what) {
  if (s != CUBLAS_STATUS_SUCCESS) throw std::runtime_error(std::string(what) + " failed: " + status_text(lt, s));
}

struct Types {
  cudaDataType_t ab, cd, scale;
  cublasComputeType_t compute;
  size_t itemsize;
};

Types types_for(const std::string& dtype, const std::string& compute) {
  Types t{};
  if (dtype == "bfloat16") {
    t.ab = t.cd = CUDA_R_16BF;
    t.itemsize = 2;
  } else if (dtype == "float16") {
    t.ab = t.cd = CUDA_R_16F;
    t.itemsize = 2;
  } else if (dtype == "float32") {
    t.ab = t.cd = CUDA_R_32F;
    t.itemsize = 4;
  } else {
    throw py::value_error("dtype: must be bfloat16, float16 or float32, got '" + dtype + "'");
  }
  t.scale = CUDA_R_32F;
  if (compute == "32f") {
    t.compute = CUBLAS_COMPUTE_32F;
  } else if (compute == "32f_pedantic") {
    t.compute = CUBLAS_COMPUTE_32F_PEDANTIC;
  } else if (compute == "32f_fast_tf32" || compute == "32f_fast_16bf" || compute == "32f_fast_16f") {
    if (dtype != "float32")
      throw py::value_error("compute: " + compute + " takes float32 inputs, got dtype " + dtype);
    t.compute = compute == "32f_fast_tf32" ? CUBLAS_COMPUTE_32F_FAST_TF32
                : compute == "32f_fast_16bf" ? CUBLAS_COMPUTE_32F_FAST_16BF : CUBLAS_COMPUTE_32F_FAST_16F;
  } else {
    throw py::value_error("compute: must be 32f, 32f_pedantic, 32f_fast_tf32, 32f_fast_16bf or 32f_fast_16f, got '" +
                          compute + "'");
  }
  return t;
}

template <typename T>
bool cfg_get(const Lt& lt, const cublasLtMatmulAlgo_t& a, cublasLtMatmulAlgoConfigAttributes_t attr, T& v) {
  size_t written = 0;
  return lt.ConfigGet(&a, attr, &v, sizeof(T), &written) == CUBLAS_STATUS_SUCCESS;
}

template <typename T>
bool cfg_set(const Lt& lt, cublasLtMatmulAlgo_t& a, cublasLtMatmulAlgoConfigAttributes_t attr, T v) {
  return lt.ConfigSet(&a, attr, &v, sizeof(T)) == CUBLAS_STATUS_SUCCESS;
}

template <typename T>
bool cap_get(const Lt& lt, const cublasLtMatmulAlgo_t& a, cublasLtMatmulAlgoCapAttributes_t attr, T& v) {
  size_t written = 0;
  return lt.CapGet(&a, attr, &v, sizeof(T), &written) == CUBLAS_STATUS_SUCCESS;
}

std::vector<uint32_t> cap_list(const Lt& lt, const cublasLtMatmulAlgo_t& a, cublasLtMatmulAlgoCapAttributes_t attr) {
  size_t need = 0;
  if (lt.CapGet(&a, attr, nullptr, 0, &need) != CUBLAS_STATUS_SUCCESS || need == 0) return {};
  std::vector<uint32_t> v(need / sizeof(uint32_t));
  size_t written = 0;
  if (lt.CapGet(&a, attr, v.data(), v.size() * sizeof(uint32_t), &written) != CUBLAS_STATUS_SUCCESS) return {};
  v.resize(written / sizeof(uint32_t));
  return v;
}

py::dict describe(const Lt& lt, const cublasLtMatmulAlgo_t& a) {
  int32_t id = -1, splitk = -1;
  uint32_t tile = 0, red = 0, swz = 0, custom = 0, stages = 0;
  uint16_t inner = 0, cluster = 0;
  py::dict d;
  d["algo_id"] = cfg_get(lt, a, CUBLASLT_ALGO_CONFIG_ID, id) ? id : -1;
  d["tile"] = cfg_get(lt, a, CUBLASLT_ALGO_CONFIG_TILE_ID, tile) ? static_cast<int64_t>(tile) : -1;
  d["splitk"] = cfg_get(lt, a, CUBLASLT_ALGO_CONFIG_SPLITK_NUM, splitk) ? splitk : -1;
  d["reduction"] = cfg_get(lt, a, CUBLASLT_ALGO_CONFIG_REDUCTION_SCHEME, red) ? static_cast<int64_t>(red) : -1;
  d["swizzle"] = cfg_get(lt, a, CUBLASLT_ALGO_CONFIG_CTA_SWIZZLING, swz) ? static_cast<int64_t>(swz) : -1;
  d["custom"] = cfg_get(lt, a, CUBLASLT_ALGO_CONFIG_CUSTOM_OPTION, custom) ? static_cast<int64_t>(custom) : -1;
  d["stages"] = cfg_get(lt, a, CUBLASLT_ALGO_CONFIG_STAGES_ID, stages) ? static_cast<int64_t>(stages) : -1;
  d["inner_shape"] = cfg_get(lt, a, CUBLASLT_ALGO_CONFIG_INNER_SHAPE_ID, inner) ? static_cast<int64_t>(inner) : -1;
  d["cluster_shape"] = cfg_get(lt, a, CUBLASLT_ALGO_CONFIG_CLUSTER_SHAPE_ID, cluster) ? static_cast<int64_t>(cluster) : -1;
  d["algo"] = py::bytes(reinterpret_cast<const char*>(a.data), sizeof(a.data));
  return d;
}

cublasLtMatmulAlgo_t algo_from_bytes(const py::bytes& b) {
  const std::string s = b;
  cublasLtMatmulAlgo_t a{};
  if (s.size() != sizeof(a.data))
    throw py::value_error("algo: must be " + std::to_string(sizeof(a.data)) + " bytes (a GemmPlan 'algo' entry), got " +
                          std::to_string(s.size()));
  std::memcpy(a.data, s.data(), sizeof(a.data));
  return a;
}

}  // namespace

// The plan itself (GemmPlan's implementation; cuBLASLt types stay out of entry.h).
class GemmPlan::Impl {
 public:
  Impl(int64_t m, int64_t n, int64_t k, const std::string& dtype, const std::string& compute,
           const std::string& layout, int device, const std::vector<std::string>& candidates)
      : m_(m), n_(n), k_(k), dtype_(dtype), compute_(compute), layout_(layout), device_(device) {
    if (m <= 0 || n <= 0 || k <= 0)
      throw py::value_error("shape: M, N, K must be positive, got M=" + std::to_string(m) + " N=" +
                            std::to_string(n) + " K=" + std::to_string(k));
    if (m > INT32_MAX || n > INT32_MAX || k > INT32_MAX) throw py::value_error("shape: M, N, K must fit in int32");
    if (layout != "tn" && layout != "nn")
      throw py::value_error("layout: must be 'tn' (F.linear, W is [N, K]) or 'nn' (X @ W, W is [K, N]), got '" +
                            layout + "'");
    t_ = types_for(dtype, compute);
    require_gpu("GemmPlan");
    const int count = cuda_device_count();
    if (device < 0 || device >= count)
      throw py::value_error("device: " + std::to_string(device) + " out of range (" + std::to_string(count) +
                            " CUDA device(s))");
    lt_ = &load_library(candidates);
    DeviceGuard g(device_);
    check_lt(*lt_, lt_->Create(&handle_), "cublasLtCreate");
    check_lt(*lt_, lt_->DescCreate(&op_, t_.compute, t_.scale), "cublasLtMatmulDescCreate");
    // Column-major: D[N, M] = op(W) [N, K] * X^T [K, M].
    cublasOperation_t ta = layout == "tn" ? CUBLAS_OP_T : CUBLAS_OP_N, tb = CUBLAS_OP_N;
    check_lt(*lt_, lt_->DescSetAttribute(op_, CUBLASLT_MATMUL_DESC_TRANSA, &ta, sizeof(ta)), "set TRANSA");
    check_lt(*lt_, lt_->DescSetAttribute(op_, CUBLASLT_MATMUL_DESC_TRANSB, &tb, sizeof(tb)), "set TRANSB");
    if (layout == "tn")  // W row-major [N, K] is column-major K x N, ld K
      check_lt(*lt_, lt_->LayoutCreate(&a_, t_.ab, k, n, k), "cublasLtMatrixLayoutCreate(A)");
    else  // W row-major [K, N] is column-major N x K, ld N
      check_lt(*lt_, lt_->LayoutCreate(&a_, t_.ab, n, k, n), "cublasLtMatrixLayoutCreate(A)");
    check_lt(*lt_, lt_->LayoutCreate(&b_, t_.ab, k, m, k), "cublasLtMatrixLayoutCreate(B)");
    check_lt(*lt_, lt_->LayoutCreate(&c_, t_.cd, n, m, n), "cublasLtMatrixLayoutCreate(C)");
  }

  ~Impl() {
    if (!lt_) return;
    if (a_) lt_->LayoutDestroy(a_);
    if (b_) lt_->LayoutDestroy(b_);
    if (c_) lt_->LayoutDestroy(c_);
    if (op_) lt_->DescDestroy(op_);
    if (handle_) lt_->Destroy(handle_);
  }
  Impl(const Impl&) = delete;
  Impl& operator=(const Impl&) = delete;

  py::dict library_info() const {
    py::dict d;
    d["path"] = lt_->path;
    d["version"] = static_cast<uint64_t>(lt_->version);
    return d;
  }

  // The heuristic's ranked picks (rank 0 = its default choice) under a workspace limit.
  py::dict heuristic(int count, uint64_t workspace_bytes) {
    if (count < 1 || count > 1024) throw py::value_error("count: must be in [1, 1024], got " + std::to_string(count));
    DeviceGuard g(device_);
    cublasLtMatmulPreference_t pref = nullptr;
    check_lt(*lt_, lt_->PrefCreate(&pref), "cublasLtMatmulPreferenceCreate");
    size_t ws = workspace_bytes;
    cublasStatus_t s = lt_->PrefSetAttribute(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &ws, sizeof(ws));
    std::vector<cublasLtMatmulHeuristicResult_t> res(count);
    int returned = 0;
    if (s == CUBLAS_STATUS_SUCCESS) s = lt_->GetHeuristic(handle_, op_, a_, b_, c_, c_, pref, count, res.data(), &returned);
    lt_->PrefDestroy(pref);
    py::dict out;
    out["status"] = status_text(*lt_, s);
    out["workspace_bytes"] = workspace_bytes;
    py::list picks;
    if (s == CUBLAS_STATUS_SUCCESS) {
      for (int i = 0; i < returned; ++i) {
        py::dict d = describe(*lt_, res[i].algo);
        d["rank"] = i;
        d["state"] = status_text(*lt_, res[i].state);
        d["workspace"] = static_cast<uint64_t>(res[i].workspaceSize);
        d["waves"] = res[i].wavesCount;
        picks.append(d);
      }
    }
    out["picks"] = picks;
    return out;
  }

  // Every algorithm id and its configurations, checked with cublasLtMatmulAlgoCheck, round-robin over
  // (algo id, tile) so that a cap still samples every id. Stages: the first stage id that passes the check
  // per configuration (the others differ in pipelining, not in the arithmetic order). Cluster and inner
  // shape: the library's automatic choice. Stops at max_valid valid configurations or max_checks checks.
  py::dict enumerate(int max_valid, int max_checks, uint64_t workspace_bytes, int max_custom, double max_seconds) {
    if (max_valid < 1 || max_checks < 1) throw py::value_error("max_valid and max_checks must be >= 1");
    const auto t0 = std::chrono::steady_clock::now();
    auto elapsed = [&]() { return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count(); };
    std::string stopped_by = "exhausted";
    DeviceGuard g(device_);
    std::vector<int> ids(1024);
    int n_ids = 0;
    check_lt(*lt_, lt_->GetIds(handle_, t_.compute, t_.scale, t_.ab, t_.ab, t_.cd, t_.cd, static_cast<int>(ids.size()),
                               ids.data(), &n_ids),
             "cublasLtMatmulAlgoGetIds");
    ids.resize(n_ids);

    struct Combo {
      cublasLtMatmulAlgo_t base;
      uint32_t tile;
      int32_t splitk;
      uint32_t red, swz, custom;
      size_t slot;    // the (algo id, tile) this combo belongs to
      size_t stages;  // index into algo_stages
      bool first;     // the (algo, tile)'s first combo: split-K 1, no swizzle, custom 0
    };
    struct Variant {
      int32_t sk;
      uint32_t red, swz, custom;
    };
    std::vector<std::vector<Combo>> queues;   // one per algo id
    std::vector<std::vector<uint32_t>> algo_stages;
    std::vector<std::vector<uint32_t>> good;  // per (algo, tile): stage ids that passed, most recent first
    std::vector<bool> dead;                   // per (algo, tile): its first combo had no valid stage
    py::list algo_caps;
    std::map<std::string, int> init_failures;
    const int32_t split_order[] = {1, 2, 4, 8, 16, 32, 3, 5, 6, 12, 24};
    size_t total = 0;
    for (int id : ids) {
      cublasLtMatmulAlgo_t a{};
      cublasStatus_t s = lt_->AlgoInit(handle_, t_.compute, t_.scale, t_.ab, t_.ab, t_.cd, t_.cd, id, &a);
      if (s != CUBLAS_STATUS_SUCCESS) {
        init_failures[status_text(*lt_, s)] += 1;
        continue;
      }
      int32_t splitk_ok = 0, custom_max = 0;
      uint32_t red_mask = 0, swz_ok = 0;
      cap_get(*lt_, a, CUBLASLT_ALGO_CAP_SPLITK_SUPPORT, splitk_ok);
      cap_get(*lt_, a, CUBLASLT_ALGO_CAP_REDUCTION_SCHEME_MASK, red_mask);
      cap_get(*lt_, a, CUBLASLT_ALGO_CAP_CTA_SWIZZLING_SUPPORT, swz_ok);
      cap_get(*lt_, a, CUBLASLT_ALGO_CAP_CUSTOM_OPTION_MAX, custom_max);
      std::vector<uint32_t> tiles = cap_list(*lt_, a, CUBLASLT_ALGO_CAP_TILE_IDS);
      std::vector<uint32_t> stages = cap_list(*lt_, a, CUBLASLT_ALGO_CAP_STAGES_IDS);
      if (tiles.empty()) tiles.push_back(CUBLASLT_MATMUL_TILE_UNDEFINED);
      if (stages.empty()) stages.push_back(CUBLASLT_MATMUL_STAGES_UNDEFINED);
      const int customs = std::min<int>(std::max(custom_max, 0), std::max(max_custom, 0)) + 1;
      py::dict caps;
      caps["algo_id"] = id;
      caps["splitk_support"] = splitk_ok;
      caps["reduction_mask"] = red_mask;
      caps["swizzle_support"] = swz_ok;
      caps["custom_option_max"] = custom_max;
      caps["tiles"] = tiles;
      caps["stages"] = stages;
      algo_caps.append(caps);
      // Variants, most telling first: every split-K (each reduction scheme), then custom options, then swizzle.
      std::vector<Variant> vars;
      for (uint32_t sw = 0; sw <= (swz_ok ? 1u : 0u); ++sw)
        for (int c = 0; c < customs; ++c)
          for (int32_t sk : split_order) {
            if (sk > 1 && (!splitk_ok || sk > k_)) continue;
            if (sk == 1) {
              vars.push_back(Variant{1, CUBLASLT_REDUCTION_SCHEME_NONE, sw, static_cast<uint32_t>(c)});
              continue;
            }
            for (uint32_t r : {1u, 2u, 4u})
              if (red_mask & r) vars.push_back(Variant{sk, r, sw, static_cast<uint32_t>(c)});
          }
      const size_t slot0 = good.size();
      for (size_t ti = 0; ti < tiles.size(); ++ti) {
        good.emplace_back();
        dead.push_back(false);
      }
      algo_stages.push_back(stages);
      // Diagonal order over (tile, variant): new tiles and new variants alternate, and each tile's first
      // variant comes before its others.
      std::vector<Combo> q;
      const size_t T = tiles.size(), V = vars.size();
      for (size_t d = 0; d + 1 < T + V; ++d)
        for (size_t ti = 0; ti <= d && ti < T; ++ti) {
          const size_t vi = d - ti;
          if (vi >= V) continue;
          const Variant& v = vars[vi];
          q.push_back(Combo{a, tiles[ti], v.sk, v.red, v.swz, v.custom, slot0 + ti, algo_stages.size() - 1, vi == 0});
        }
      total += q.size();
      queues.push_back(std::move(q));
    }

    py::list valid;
    std::map<std::string, int> failures;
    py::list failure_examples;
    int checks = 0, too_small = 0;
    bool capped = false;
    size_t depth = 0;
    for (bool any = true; any && !capped; ++depth) {
      any = false;
      for (size_t qi = 0; qi < queues.size(); ++qi) {
        auto& q = queues[qi];
        if (depth >= q.size()) continue;
        any = true;
        if (dead[q[depth].slot]) continue;
        if (max_seconds > 0 && elapsed() > max_seconds) {
          capped = true;
          stopped_by = "max_seconds";
          break;
        }
        Combo& c = q[depth];
        // Stages that passed before for this (algo, tile) first, then the rest.
        std::vector<uint32_t> order = good[c.slot];
        for (uint32_t st : algo_stages[c.stages])
          if (std::find(order.begin(), order.end(), st) == order.end()) order.push_back(st);
        cublasLtMatmulAlgo_t a = c.base;
        cfg_set(*lt_, a, CUBLASLT_ALGO_CONFIG_TILE_ID, c.tile);
        cfg_set(*lt_, a, CUBLASLT_ALGO_CONFIG_SPLITK_NUM, c.splitk);
        cfg_set(*lt_, a, CUBLASLT_ALGO_CONFIG_REDUCTION_SCHEME, c.red);
        cfg_set(*lt_, a, CUBLASLT_ALGO_CONFIG_CTA_SWIZZLING, c.swz);
        cfg_set(*lt_, a, CUBLASLT_ALGO_CONFIG_CUSTOM_OPTION, c.custom);
        cublasStatus_t last = CUBLAS_STATUS_NOT_SUPPORTED;
        bool ok = false;
        for (uint32_t st : order) {
          if (checks >= max_checks) {
            capped = true;
            stopped_by = "max_checks";
            break;
          }
          cfg_set(*lt_, a, CUBLASLT_ALGO_CONFIG_STAGES_ID, st);
          cublasLtMatmulHeuristicResult_t r{};
          ++checks;
          last = lt_->AlgoCheck(handle_, op_, a_, b_, c_, c_, &a, &r);
          if (last != CUBLAS_STATUS_SUCCESS) continue;
          py::dict d = describe(*lt_, a);
          d["workspace"] = static_cast<uint64_t>(r.workspaceSize);
          d["waves"] = r.wavesCount;
          if (r.workspaceSize > workspace_bytes) {
            ++too_small;
            d["status"] = "workspace_too_small";
            if (failure_examples.size() < 40) failure_examples.append(d);
            failures["workspace_too_small"] += 1;
          } else {
            d["status"] = "ok";
            valid.append(d);
          }
          ok = true;
          auto& gs = good[c.slot];
          gs.erase(std::remove(gs.begin(), gs.end(), st), gs.end());
          gs.insert(gs.begin(), st);
          break;
        }
        if (capped) break;
        if (!ok && c.first) dead[c.slot] = true;  // tile unusable for this problem: skip its other combos
        if (!ok) {
          const std::string name = status_text(*lt_, last);
          if (failures[name]++ < 3 && failure_examples.size() < 40) {
            py::dict d = describe(*lt_, a);
            d["status"] = name;
            failure_examples.append(d);
          }
        }
        if (static_cast<int>(valid.size()) >= max_valid) {
          capped = true;
          stopped_by = "max_valid";
          break;
        }
      }
    }
    py::dict out;
    out["algo_ids"] = ids;
    out["algo_caps"] = algo_caps;
    out["init_failures"] = init_failures;
    out["candidates"] = static_cast<uint64_t>(total);
    out["checks"] = checks;
    out["valid"] = valid;
    out["failures"] = failures;
    out["failure_examples"] = failure_examples;
    out["workspace_too_small"] = too_small;
    out["capped"] = capped;
    out["stopped_by"] = stopped_by;
    out["seconds"] = elapsed();
    out["max_seconds"] = max_seconds;
    int n_dead = 0;
    for (bool d : dead) n_dead += d ? 1 : 0;
    out["tile_slots"] = static_cast<int>(dead.size());
    out["dead_tiles"] = n_dead;
    out["max_valid"] = max_valid;
    out["max_checks"] = max_checks;
    out["workspace_bytes"] = workspace_bytes;
    out["policy"] =
        "round-robin over algo ids; per algo a diagonal walk over (tile, variant), variants = split-K in "
        "{1,2,4,8,16,32,3,5,6,12,24} <= K with each reduction scheme of the mask, then custom options <= "
        "min(cap, max_custom), then CTA swizzle; per combination the first stage id that "
        "passes cublasLtMatmulAlgoCheck (stages that passed before tried first); an (algo, tile) whose split-K 1 "
        "configuration passes with no stage is dropped; cluster and inner shape automatic";
    return out;
  }

  // One matmul with `algo` on device pointers (x [M,K], w, y [M,N] row-major). Returns the cuBLAS status name.
  std::string run(const py::bytes& algo, uintptr_t x, uintptr_t w, uintptr_t y, uintptr_t workspace,
                  uint64_t workspace_bytes, uintptr_t stream) {
    cublasLtMatmulAlgo_t a = algo_from_bytes(algo);
    check_pointers(x, w, y, workspace, workspace_bytes);
    DeviceGuard g(device_);
    return status_text(*lt_, launch(a, x, w, y, workspace, workspace_bytes, stream));
  }

  // Median-ready per-run times (ms, CUDA events on `stream`) of `runs` matmuls after `warmup` ones.
  std::vector<float> time(const py::bytes& algo, uintptr_t x, uintptr_t w, uintptr_t y, uintptr_t workspace,
                          uint64_t workspace_bytes, uintptr_t stream, int runs, int warmup) {
    if (runs < 1 || warmup < 0) throw py::value_error("runs must be >= 1 and warmup >= 0");
    cublasLtMatmulAlgo_t a = algo_from_bytes(algo);
    check_pointers(x, w, y, workspace, workspace_bytes);
    DeviceGuard g(device_);
    for (int i = 0; i < warmup; ++i) check_lt(*lt_, launch(a, x, w, y, workspace, workspace_bytes, stream), "cublasLtMatmul");
    std::vector<cudaEvent_t> ev(2 * runs, nullptr);
    std::vector<float> ms(runs, 0.f);
    try {
      for (auto& e : ev) check_cuda(cudaEventCreate(&e), "cudaEventCreate");
      cudaStream_t s = reinterpret_cast<cudaStream_t>(stream);
      for (int i = 0; i < runs; ++i) {
        check_cuda(cudaEventRecord(ev[2 * i], s), "cudaEventRecord");
        check_lt(*lt_, launch(a, x, w, y, workspace, workspace_bytes, stream), "cublasLtMatmul");
        check_cuda(cudaEventRecord(ev[2 * i + 1], s), "cudaEventRecord");
      }
      check_cuda(cudaEventSynchronize(ev.back()), "cudaEventSynchronize");
      for (int i = 0; i < runs; ++i) check_cuda(cudaEventElapsedTime(&ms[i], ev[2 * i], ev[2 * i + 1]), "cudaEventElapsedTime");
    } catch (...) {
      for (auto& e : ev)
        if (e) cudaEventDestroy(e);
      throw;
    }
    for (auto& e : ev) cudaEventDestroy(e);
    return ms;
  }

 private:
  void check_pointers(uintptr_t x, uintptr_t w, uintptr_t y, uintptr_t workspace, uint64_t workspace_bytes) const {
    const char* names[] = {"x", "w", "y"};
    const uintptr_t ptrs[] = {x, w, y};
    for (int i = 0; i < 3; ++i) {
      if (!ptrs[i]) throw py::value_error(std::string(names[i]) + ": null device pointer");
      if (pointer_device(reinterpret_cast<void*>(ptrs[i]), names[i]) != device_)
        throw py::value_error(std::string(names[i]) + ": not on CUDA device " + std::to_string(device_));
    }
    if (workspace_bytes > 0 && !workspace) throw py::value_error("workspace: null pointer with workspace_bytes > 0");
  }

  cublasStatus_t launch(const cublasLtMatmulAlgo_t& a, uintptr_t x, uintptr_t w, uintptr_t y, uintptr_t workspace,
                        uint64_t workspace_bytes, uintptr_t stream) {
    const float alpha = 1.f, beta = 0.f;
    cublasStatus_t s = lt_->Matmul(handle_, op_, &alpha, reinterpret_cast<const void*>(w), a_,
                                   reinterpret_cast<const void*>(x), b_, &beta, reinterpret_cast<void*>(y), c_,
                                   reinterpret_cast<void*>(y), c_, &a, reinterpret_cast<void*>(workspace),
                                   static_cast<size_t>(workspace_bytes), reinterpret_cast<cudaStream_t>(stream));
    if (s == CUBLAS_STATUS_SUCCESS) check_launch("cublasLtMatmul");
    return s;
  }

  int64_t m_, n_, k_;
  std::string dtype_, compute_, layout_;
  int device_;
  Types t_{};
  const Lt* lt_ = nullptr;
  cublasLtHandle_t handle_ = nullptr;
  cublasLtMatmulDesc_t op_ = nullptr;
  cublasLtMatrixLayout_t a_ = nullptr, b_ = nullptr, c_ = nullptr;
};

GemmPlan::GemmPlan(int64_t m, int64_t n, int64_t k, const std::string& dtype, const std::string& compute,
                   const std::string& layout, int device, const std::vector<std::string>& candidates)
    : impl_(std::make_unique<Impl>(m, n, k, dtype, compute, layout, device, candidates)) {}

GemmPlan::~GemmPlan() = default;

py::dict GemmPlan::library() const { return impl_->library_info(); }

py::dict GemmPlan::heuristic(int count, uint64_t workspace_bytes) {
  return impl_->heuristic(count, workspace_bytes);
}

py::dict GemmPlan::enumerate(int max_valid, int max_checks, uint64_t workspace_bytes, int max_custom,
                             double max_seconds) {
  return impl_->enumerate(max_valid, max_checks, workspace_bytes, max_custom, max_seconds);
}

std::string GemmPlan::run(const py::bytes& algo, uintptr_t x, uintptr_t w, uintptr_t y, uintptr_t workspace,
                          uint64_t workspace_bytes, uintptr_t stream) {
  return impl_->run(algo, x, w, y, workspace, workspace_bytes, stream);
}

std::vector<float> GemmPlan::time(const py::bytes& algo, uintptr_t x, uintptr_t w, uintptr_t y, uintptr_t workspace,
                                  uint64_t workspace_bytes, uintptr_t stream, int runs, int warmup) {
  return impl_->time(algo, x, w, y, workspace, workspace_bytes, stream, runs, warmup);
}

#else  // no cuBLASLt headers or no CUDA: the class exists and its constructor says why it cannot be used

class GemmPlan::Impl {};

GemmPlan::GemmPlan(int64_t, int64_t, int64_t, const std::string&, const std::string&, const std::string&, int,
                   const std::vector<std::string>&) {
  py::dict info = gemm_build_info();
#ifndef DRIFTSCOPE_WITH_CUDA
  throw NoGPU("GemmPlan needs a CUDA GPU but probes._C was built without CUDA: " + info["reason"].cast<std::string>());
#else
  throw std::runtime_error("GemmPlan is unavailable: " + info["reason"].cast<std::string>());
#endif
}

GemmPlan::~GemmPlan() = default;

namespace {
// No GemmPlan is ever constructed in this build, so its methods cannot be reached.
[[noreturn]] void unreachable() { throw std::logic_error("GemmPlan is unavailable in this build"); }
}  // namespace

py::dict GemmPlan::library() const { unreachable(); }
py::dict GemmPlan::heuristic(int, uint64_t) { unreachable(); }
py::dict GemmPlan::enumerate(int, int, uint64_t, int, double) { unreachable(); }
std::string GemmPlan::run(const py::bytes&, uintptr_t, uintptr_t, uintptr_t, uintptr_t, uint64_t, uintptr_t) {
  unreachable();
}
std::vector<float> GemmPlan::time(const py::bytes&, uintptr_t, uintptr_t, uintptr_t, uintptr_t, uint64_t, uintptr_t,
                                  int, int) {
  unreachable();
}

#endif

}  // namespace driftscope
