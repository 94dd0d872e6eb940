// The molt_k verifiers against the op table (core/include/molt/ops.def): a kernel's op must be a
// row, its attrs exactly the row's attrs; a launch binds exactly the row's arguments.
// RUN: molt-opt %s -split-input-file -verify-diagnostics

// expected-error @+1 {{'molt_k.kernel' op has unknown kernel op 'no_such_op'}}
molt_k.kernel @k {op = "no_such_op", entry = "molt_k", attrs = {}, launch = #molt_k.launch<block = [256, 1, 1], grid = ["1", "1", "1"], smem = 0, tile_m = 0, tile_n = 0, tile_k = 0, stages = 1, split = "none">}

// -----

// expected-error @+1 {{'molt_k.kernel' op lacks the constant N of frob_norm}}
molt_k.kernel @k {op = "frob_norm", entry = "molt_k", attrs = {D = 8 : i64, R = 4 : i64, OFF = 0 : i64}, launch = #molt_k.launch<block = [256, 1, 1], grid = ["1", "1", "1"], smem = 0, tile_m = 0, tile_n = 0, tile_k = 0, stages = 1, split = "none">}

// -----

// expected-error @+1 {{'molt_k.kernel' op attr 'T' is not a constant of add_bias (molt/ops.def)}}
molt_k.kernel @k {op = "add_bias", entry = "molt_k", attrs = {D = 8 : i64, T = 3 : i64}, launch = #molt_k.launch<block = [256, 1, 1], grid = ["1", "1", "1"], smem = 0, tile_m = 0, tile_n = 0, tile_k = 0, stages = 1, split = "none">}

// -----

molt_k.kernel @k {op = "add_bias", entry = "molt_k", attrs = {D = 8 : i64}, launch = #molt_k.launch<block = [256, 1, 1], grid = ["1", "1", "1"], smem = 0, tile_m = 0, tile_n = 0, tile_k = 0, stages = 1, split = "none">}
molt_k.entry "forward" {
  // expected-error @+1 {{'molt_k.launch' op does not bind argument 'yhat' of add_bias}}
  molt_k.launch @k {args = {dec_b = "dec_b", y = "yhat"}}
}
