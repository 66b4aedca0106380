// Array intake (see array.h). Order of preference: __dlpack__ (consumed as the protocol says: the capsule
// is renamed "used_dltensor[_versioned]" and the producer's deleter is called when the call is done),
// then __cuda_array_interface__, then __array_interface__ (NumPy; also the fallback for dtypes DLPack cannot
// express, such as ml_dtypes.bfloat16 arrays).
#include "array.h"

#include <Python.h>

#include <string>
#include <vector>

#include "dlpack.h"

namespace driftscope {

namespace {

[[noreturn]] void type_error(const std::string& msg) { throw py::type_error(msg); }
[[noreturn]] void value_error(const std::string& msg) { throw py::value_error(msg); }

const char* kAllowedHint = " (allowed: float32, float16, bfloat16)";

// No iostreams in this module: a libstdc++ linked in statically by a dependency can clash with the
// process's locale facets (seen as a crash in ostream << integer on the GPU machine).
std::string dl_dtype_name(const dl::DataType& t) {
  std::string s;
  switch (t.code) {
    case dl::kDLInt: s = "int"; break;
    case dl::kDLUInt: s = "uint"; break;
    case dl::kDLFloat: s = "float"; break;
    case dl::kDLBfloat: s = "bfloat"; break;
    case 5: s = "complex"; break;
    case 6: s = "bool"; break;
    default: s = "dlpack-code-" + std::to_string(int(t.code)); break;
  }
  if (t.code != 6) s += std::to_string(int(t.bits));
  if (t.lanes != 1) s += "x" + std::to_string(t.lanes);
  return s;
}

void set_shape(ArrayView& v, int64_t ndim, const int64_t* shape, const int64_t* strides_elems) {
  if (ndim != 1) {
    std::string s = v.arg + ": expected a 1-D array, got " + std::to_string(ndim) + "-D";
    if (ndim > 0) {
      s += " with shape (";
      for (int64_t i = 0; i < ndim; ++i) s += (i ? ", " : "") + std::to_string(shape[i]);
      s += ")";
    }
    value_error(s);
  }
  v.size = shape[0];
  if (v.size == 0) value_error(v.arg + ": empty input (0 elements); the reductions need at least one element");
  if (strides_elems && v.size > 1 && strides_elems[0] != 1) {
    value_error(v.arg + ": array is not contiguous (stride " + std::to_string(strides_elems[0]) +
                " elements, expected 1)");
  }
}

// ---- DLPack ------------------------------------------------------------------------------------------
void from_dl_tensor(ArrayView& v, const dl::Tensor& t) {
  const dl::DataType& d = t.dtype;
  if (d.lanes == 1 && d.code == dl::kDLFloat && d.bits == 32) v.dtype = DType::F32;
  else if (d.lanes == 1 && d.code == dl::kDLFloat && d.bits == 16) v.dtype = DType::F16;
  else if (d.lanes == 1 && d.code == dl::kDLBfloat && d.bits == 16) v.dtype = DType::BF16;
  else type_error(v.arg + ": dtype " + dl_dtype_name(d) + " is not supported" + kAllowedHint);
  switch (t.device.device_type) {
    case dl::kDLCPU:
    case dl::kDLCUDAHost: v.where = Where::CPU; v.device = -1; break;
    case dl::kDLCUDA:
    case dl::kDLCUDAManaged: v.where = Where::CUDA; v.device = t.device.device_id; break;
    default:
      type_error(v.arg + ": DLPack device type " + std::to_string(t.device.device_type) +
                 " is not supported (CPU or CUDA arrays only)");
  }
  set_shape(v, t.ndim, t.shape, t.strides);
  v.data = static_cast<char*>(t.data) + t.byte_offset;
}

bool is_buffer_error(const py::error_already_set& e) { return e.matches(PyExc_BufferError); }

// Returns false (and leaves v alone) when the producer refuses with BufferError and `can_fall_back`.
bool try_dlpack(ArrayView& v, py::handle obj, bool can_fall_back) {
  int dev_type = dl::kDLCPU;
  if (py::hasattr(obj, "__dlpack_device__")) {
    py::tuple dev = obj.attr("__dlpack_device__")();
    dev_type = dev[0].cast<int>();
  }
  py::object fn = obj.attr("__dlpack__");
  py::dict kw;
  // On CUDA, stream=-1 asks the producer not to synchronise; probes.ext launches on the producer's stream.
  if (dev_type == dl::kDLCUDA || dev_type == dl::kDLCUDAManaged) kw["stream"] = -1;
  py::object cap;
  try {
    py::dict kwv(kw);
    kwv["max_version"] = py::make_tuple(1, 0);
    try {
      cap = fn(**kwv);
    } catch (py::error_already_set& e) {
      if (!e.matches(PyExc_TypeError)) throw;
      cap = fn(**kw);  // producer predates DLPack 1.0 (no max_version)
    }
  } catch (py::error_already_set& e) {
    if (can_fall_back && is_buffer_error(e)) return false;
    type_error(v.arg + ": cannot export the array through __dlpack__: " + std::string(e.what()));
  }
  PyObject* c = cap.ptr();
  if (!PyCapsule_CheckExact(c)) type_error(v.arg + ": __dlpack__() did not return a capsule");
  const char* name = PyCapsule_GetName(c);
  std::string cname = name ? name : "";
  v.protocol = "dlpack";
  if (cname == "dltensor_versioned") {
    auto* m = static_cast<dl::ManagedTensorVersioned*>(PyCapsule_GetPointer(c, name));
    if (!m) throw py::error_already_set();
    if (m->version.major > 1)
      type_error(v.arg + ": DLPack version " + std::to_string(m->version.major) + " is not supported");
    if (PyCapsule_SetName(c, "used_dltensor_versioned") != 0) throw py::error_already_set();
    v.keep = std::shared_ptr<void>(m, [](void* p) {
      auto* mt = static_cast<dl::ManagedTensorVersioned*>(p);
      if (mt->deleter) mt->deleter(mt);
    });
    v.readonly = (m->flags & dl::kFlagReadOnly) != 0;
    from_dl_tensor(v, m->dl_tensor);
  } else if (cname == "dltensor") {
    auto* m = static_cast<dl::ManagedTensor*>(PyCapsule_GetPointer(c, name));
    if (!m) throw py::error_already_set();
    if (PyCapsule_SetName(c, "used_dltensor") != 0) throw py::error_already_set();
    v.keep = std::shared_ptr<void>(m, [](void* p) {
      auto* mt = static_cast<dl::ManagedTensor*>(p);
      if (mt->deleter) mt->deleter(mt);
    });
    v.readonly = false;
    from_dl_tensor(v, m->dl_tensor);
  } else {
    type_error(v.arg + ": __dlpack__() returned a capsule named '" + cname + "' (already consumed?)");
  }
  return true;
}

// ---- __cuda_array_interface__ / __array_interface__ ---------------------------------------------------
DType dtype_from_typestr(const ArrayView& v, py::handle obj, const std::string& typestr) {
  if (typestr.size() >= 3 && typestr[0] == '>') type_error(v.arg + ": big-endian dtype " + typestr + " is not supported");
  std::string kind = typestr.size() >= 2 ? typestr.substr(1) : typestr;
  if (kind == "f4") return DType::F32;
  if (kind == "f2") return DType::F16;
  if (kind == "V2" && py::hasattr(obj, "dtype")) {  // ml_dtypes.bfloat16 shows up as an opaque 2-byte void
    std::string name = py::str(obj.attr("dtype"));
    if (name == "bfloat16") return DType::BF16;
    type_error(v.arg + ": dtype " + name + " is not supported" + kAllowedHint);
  }
  std::string name = typestr;
  if (py::hasattr(obj, "dtype")) name = py::str(obj.attr("dtype"));
  type_error(v.arg + ": dtype " + name + " is not supported" + kAllowedHint);
}

void from_interface(ArrayView& v, py::handle obj, py::dict d, Where where) {
  v.where = where;
  v.device = -1;
  if (d.contains("mask") && !d["mask"].is_none()) value_error(v.arg + ": masked arrays are not supported");
  v.dtype = dtype_from_typestr(v, obj, py::str(d["typestr"]));
  py::tuple shape = d["shape"];
  std::vector<int64_t> shp;
  for (auto s : shape) shp.push_back(s.cast<int64_t>());
  std::vector<int64_t> strides_elems;
  const int64_t isz = static_cast<int64_t>(itemsize(v.dtype));
  if (d.contains("strides") && !d["strides"].is_none()) {
    for (auto s : py::tuple(d["strides"])) {
      int64_t b = s.cast<int64_t>();
      if (b % isz != 0) value_error(v.arg + ": array is not contiguous (stride not a multiple of the itemsize)");
      strides_elems.push_back(b / isz);
    }
  }
  set_shape(v, static_cast<int64_t>(shp.size()), shp.data(), strides_elems.empty() ? nullptr : strides_elems.data());
  py::object data = d["data"];
  if (data.is_none() || !py::isinstance<py::tuple>(data))
    type_error(v.arg + ": array interface without a (pointer, read-only) data tuple is not supported");
  py::tuple dt = data;
  v.data = reinterpret_cast<void*>(dt[0].cast<uintptr_t>());
  v.readonly = dt[1].cast<bool>();
  if (d.contains("offset")) v.data = static_cast<char*>(v.data) + d["offset"].cast<int64_t>();
}

}  // namespace

ArrayView intake(py::handle obj, const std::string& arg) {
  ArrayView v;
  v.arg = arg;
  if (obj.is_none()) type_error(arg + ": expected an array, got None");
  const bool has_cai = py::hasattr(obj, "__cuda_array_interface__");
  const bool has_ai = py::hasattr(obj, "__array_interface__");
  if (py::hasattr(obj, "__dlpack__")) {
    if (try_dlpack(v, obj, has_cai || has_ai)) return v;
  }
  if (has_cai) {
    v.protocol = "cuda_array_interface";
    from_interface(v, obj, obj.attr("__cuda_array_interface__"), Where::CUDA);
    return v;
  }
  if (has_ai) {
    v.protocol = "array_interface";
    from_interface(v, obj, obj.attr("__array_interface__"), Where::CPU);
    return v;
  }
  type_error(arg + ": expected an array (an object with __dlpack__, __cuda_array_interface__ or "
                   "__array_interface__), got " + std::string(py::str(py::type::of(obj).attr("__name__"))));
}

}  // namespace driftscope
