// Tensor checks of the fused ring codec ops (fwi_codec.cpp), shared by both devices.
#pragma once

#include <torch/extension.h>

#include <algorithm>

#include "fwi_common.h"

namespace fwi {

// Checks dtypes, shapes, contiguity and devices of (values, codes, side); returns C, the cells
// per row. `values` is the codec's float32 side: x when encoding, out when decoding; codes and
// side must have the dtypes given (int8 codec: int8 and float32; fp16 codec: half and int8).
int64_t check_codec(const at::Tensor& values, const at::Tensor& codes, const at::Tensor& side,
                    at::ScalarType code_dtype, at::ScalarType side_dtype);

}  // namespace fwi
