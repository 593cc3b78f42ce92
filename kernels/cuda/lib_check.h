// Status checks for the CUDA math libraries, built on TG_CHECK_STATUS (common/check.h) like
// TG_CHECK_CUDA (common/cuda_check.h): one family, one message format
// ("<lib> error <code> (<library message>) in `<expr>`").
#pragma once

#include <cublasLt.h>
#include <cudnn.h>

#include "common/cuda_check.h"

#define TG_CHECK_CUBLAS(expr) TG_CHECK_STATUS("cuBLASLt", expr, CUBLAS_STATUS_SUCCESS, cublasLtGetStatusString)
#define TG_CHECK_CUDNN(expr) TG_CHECK_STATUS("cuDNN", expr, CUDNN_STATUS_SUCCESS, cudnnGetErrorString)
