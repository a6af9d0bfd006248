// Tensor checks of the fused int8 ring codec ops (fwi_codec.cpp), shared by both devices.
#pragma once

#include <torch/extension.h>

#include <algorithm>

#include "fwi_common.h"

namespace fwi {

// Checks dtypes, shapes, contiguity and devices of (values, codes, scale); returns C, the
// cells per row. `values` is the codec's float32 side: x when encoding, out when decoding.
int64_t check_codec(const at::Tensor& values, const at::Tensor& codes, const at::Tensor& scale);

}  // namespace fwi
