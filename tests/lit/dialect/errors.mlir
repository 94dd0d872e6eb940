// Every verifier message of the molt dialect, one bad spec per split.
// RUN: molt-opt %s -split-input-file -verify-diagnostics

// Bucket rank must be positive.
// expected-error @+1 {{bucket rank must be positive, got 0}}
molt.layer @m {d_model = 64, element_type = f32, schedule = #molt.schedule<ranks = [0], counts = [1]>, gate = #molt.gate<jumprelu threshold = 0.1, bandwidth = 0.05>, penalty = #molt.penalty<tanh c = 4.0, lambda = 0.01, warmup = 0.1>}

// -----

// Negative rank.
// expected-error @+1 {{bucket rank must be positive, got -8}}
molt.layer @m {d_model = 64, element_type = f32, schedule = #molt.schedule<ranks = [-8], counts = [1]>, gate = #molt.gate<jumprelu threshold = 0.1, bandwidth = 0.05>, penalty = #molt.penalty<tanh c = 4.0, lambda = 0.01, warmup = 0.1>}

// -----

// Bucket count must be positive.
// expected-error @+1 {{bucket count must be positive, got 0}}
molt.layer @m {d_model = 64, element_type = f32, schedule = #molt.schedule<ranks = [8], counts = [0]>, gate = #molt.gate<jumprelu threshold = 0.1, bandwidth = 0.05>, penalty = #molt.penalty<tanh c = 4.0, lambda = 0.01, warmup = 0.1>}

// -----

// Bucket attribute on its own.
// expected-error @+1 {{bucket count must be positive, got -1}}
module attributes {test.b = #molt.bucket<rank = 4, count = -1>} {}

// -----

// Empty schedule.
// expected-error @+1 {{schedule must have at least one bucket}}
molt.layer @m {d_model = 64, element_type = f32, schedule = #molt.schedule<ranks = [], counts = []>, gate = #molt.gate<jumprelu threshold = 0.1, bandwidth = 0.05>, penalty = #molt.penalty<tanh c = 4.0, lambda = 0.01, warmup = 0.1>}

// -----

// Repeated ranks.
// expected-error @+1 {{schedule repeats rank 16}}
molt.layer @m {d_model = 64, element_type = f32, schedule = #molt.schedule<ranks = [16, 8, 16], counts = [1, 2, 3]>, gate = #molt.gate<jumprelu threshold = 0.1, bandwidth = 0.05>, penalty = #molt.penalty<tanh c = 4.0, lambda = 0.01, warmup = 0.1>}

// -----

// Ranks and counts of different lengths.
// expected-error @+1 {{schedule has 2 ranks but 1 counts}}
molt.layer @m {d_model = 64, element_type = f32, schedule = #molt.schedule<ranks = [16, 8], counts = [1]>, gate = #molt.gate<jumprelu threshold = 0.1, bandwidth = 0.05>, penalty = #molt.penalty<tanh c = 4.0, lambda = 0.01, warmup = 0.1>}

// -----

// Reference N must be positive.
// expected-error @+1 {{schedule N must be positive, got 0}}
molt.layer @m {d_model = 768, element_type = f32, schedule = #molt.schedule<reference N = 0>, gate = #molt.gate<jumprelu threshold = 0.1, bandwidth = 0.05>, penalty = #molt.penalty<tanh c = 4.0, lambda = 0.01, warmup = 0.1>}

// -----

// Geometric N must be positive.
// expected-error @+1 {{schedule N must be positive, got -3}}
molt.layer @m {d_model = 64, element_type = f32, schedule = #molt.schedule<geometric N = -3, ranks = [8]>, gate = #molt.gate<jumprelu threshold = 0.1, bandwidth = 0.05>, penalty = #molt.penalty<tanh c = 4.0, lambda = 0.01, warmup = 0.1>}

// -----

// Geometric counts overflow.
// expected-error @+1 {{schedule N = 4611686018427387904 is too large (counts overflow int64)}}
molt.layer @m {d_model = 64, element_type = f32, schedule = #molt.schedule<geometric N = 4611686018427387904, ranks = [8, 4]>, gate = #molt.gate<jumprelu threshold = 0.1, bandwidth = 0.05>, penalty = #molt.penalty<tanh c = 4.0, lambda = 0.01, warmup = 0.1>}

// -----

// Rank above d_model.
// expected-error @+1 {{'molt.layer' op schedule rank 512 exceeds d_model = 64}}
molt.layer @m {d_model = 64, element_type = f32, schedule = #molt.schedule<reference N = 1>, gate = #molt.gate<jumprelu threshold = 0.1, bandwidth = 0.05>, penalty = #molt.penalty<tanh c = 4.0, lambda = 0.01, warmup = 0.1>}

// -----

// D_model zero.
// expected-error @+1 {{'molt.layer' op d_model must be positive, got 0}}
molt.layer @m {d_model = 0, element_type = f32, schedule = #molt.schedule<ranks = [32, 16], counts = [2, 4]>, gate = #molt.gate<jumprelu threshold = 0.1, bandwidth = 0.05>, penalty = #molt.penalty<tanh c = 4.0, lambda = 0.01, warmup = 0.1>}

// -----

// D_model negative.
// expected-error @+1 {{'molt.layer' op d_model must be positive, got -64}}
molt.layer @m {d_model = -64, element_type = f32, schedule = #molt.schedule<ranks = [32, 16], counts = [2, 4]>, gate = #molt.gate<jumprelu threshold = 0.1, bandwidth = 0.05>, penalty = #molt.penalty<tanh c = 4.0, lambda = 0.01, warmup = 0.1>}

// -----

// D_model too large for int64.
// expected-error @+1 {{integer constant out of range for attribute}}
molt.layer @m {d_model = 99999999999999999999, element_type = f32, schedule = #molt.schedule<ranks = [32, 16], counts = [2, 4]>, gate = #molt.gate<jumprelu threshold = 0.1, bandwidth = 0.05>, penalty = #molt.penalty<tanh c = 4.0, lambda = 0.01, warmup = 0.1>}

// -----

// Parameter count overflow.
// expected-error @+1 {{'molt.layer' op parameter count overflows int64 (d_model = 4611686018427387904 with this schedule)}}
molt.layer @m {d_model = 4611686018427387904, element_type = f32, schedule = #molt.schedule<ranks = [32, 16], counts = [2, 4]>, gate = #molt.gate<jumprelu threshold = 0.1, bandwidth = 0.05>, penalty = #molt.penalty<tanh c = 4.0, lambda = 0.01, warmup = 0.1>}

// -----

// Element type.
// expected-error @+1 {{'molt.layer' op element_type must be f32, f16 or bf16, got 'i32'}}
molt.layer @m {d_model = 64, element_type = i32, schedule = #molt.schedule<ranks = [32, 16], counts = [2, 4]>, gate = #molt.gate<jumprelu threshold = 0.1, bandwidth = 0.05>, penalty = #molt.penalty<tanh c = 4.0, lambda = 0.01, warmup = 0.1>}

// -----

// Unknown gate kind.
// expected-error @+1 {{unknown gate kind 'swish' (expected jumprelu, relu or topk)}}
molt.layer @m {d_model = 64, element_type = f32, schedule = #molt.schedule<ranks = [32, 16], counts = [2, 4]>, gate = #molt.gate<swish>, penalty = #molt.penalty<tanh c = 4.0, lambda = 0.01, warmup = 0.1>}

// -----

// Topk on a layer.
// expected-error @+1 {{'molt.layer' op gate topk is only valid on molt.transcoder (use jumprelu or relu)}}
molt.layer @m {d_model = 64, element_type = f32, schedule = #molt.schedule<ranks = [32, 16], counts = [2, 4]>, gate = #molt.gate<topk k = 4>, penalty = #molt.penalty<tanh c = 4.0, lambda = 0.01, warmup = 0.1>}

// -----

// Negative threshold.
// expected-error @+1 {{jumprelu threshold must be finite and >= 0, got -0.1}}
molt.layer @m {d_model = 64, element_type = f32, schedule = #molt.schedule<ranks = [32, 16], counts = [2, 4]>, gate = #molt.gate<jumprelu threshold = -0.1, bandwidth = 0.05>, penalty = #molt.penalty<tanh c = 4.0, lambda = 0.01, warmup = 0.1>}

// -----

// NaN threshold (hex).
// expected-error @+1 {{jumprelu threshold must be finite and >= 0, got nan}}
molt.layer @m {d_model = 64, element_type = f32, schedule = #molt.schedule<ranks = [32, 16], counts = [2, 4]>, gate = #molt.gate<jumprelu threshold = 0x7FF8000000000000, bandwidth = 0.05>, penalty = #molt.penalty<tanh c = 4.0, lambda = 0.01, warmup = 0.1>}

// -----

// Zero bandwidth.
// expected-error @+1 {{jumprelu bandwidth must be finite and > 0, got 0.0}}
molt.layer @m {d_model = 64, element_type = f32, schedule = #molt.schedule<ranks = [32, 16], counts = [2, 4]>, gate = #molt.gate<jumprelu threshold = 0.1, bandwidth = 0.0>, penalty = #molt.penalty<tanh c = 4.0, lambda = 0.01, warmup = 0.1>}

// -----

// Infinite bandwidth.
// expected-error @+1 {{jumprelu bandwidth must be finite and > 0, got inf}}
molt.layer @m {d_model = 64, element_type = f32, schedule = #molt.schedule<ranks = [32, 16], counts = [2, 4]>, gate = #molt.gate<jumprelu threshold = 0.1, bandwidth = 1.0e999>, penalty = #molt.penalty<tanh c = 4.0, lambda = 0.01, warmup = 0.1>}

// -----

// Topk k zero.
// expected-error @+1 {{topk k must be positive, got 0}}
molt.transcoder @t {d_model = 64, element_type = f32, features = 8, activation = #molt.gate<topk k = 0>, penalty = #molt.penalty<l1 lambda = 0.0, warmup = 0.0>}

// -----

// Unknown penalty kind.
// expected-error @+1 {{unknown penalty kind 'l2' (expected tanh or l1)}}
molt.layer @m {d_model = 64, element_type = f32, schedule = #molt.schedule<ranks = [32, 16], counts = [2, 4]>, gate = #molt.gate<jumprelu threshold = 0.1, bandwidth = 0.05>, penalty = #molt.penalty<l2 lambda = 0.01, warmup = 0.1>}

// -----

// Negative c.
// expected-error @+1 {{tanh penalty c must be finite and > 0, got -1.0}}
molt.layer @m {d_model = 64, element_type = f32, schedule = #molt.schedule<ranks = [32, 16], counts = [2, 4]>, gate = #molt.gate<jumprelu threshold = 0.1, bandwidth = 0.05>, penalty = #molt.penalty<tanh c = -1.0, lambda = 0.01, warmup = 0.1>}

// -----

// Infinite c.
// expected-error @+1 {{tanh penalty c must be finite and > 0, got inf}}
molt.layer @m {d_model = 64, element_type = f32, schedule = #molt.schedule<ranks = [32, 16], counts = [2, 4]>, gate = #molt.gate<jumprelu threshold = 0.1, bandwidth = 0.05>, penalty = #molt.penalty<tanh c = 1.0e400, lambda = 0.01, warmup = 0.1>}

// -----

// Negative lambda.
// expected-error @+1 {{penalty lambda must be finite and >= 0, got -0.01}}
molt.layer @m {d_model = 64, element_type = f32, schedule = #molt.schedule<ranks = [32, 16], counts = [2, 4]>, gate = #molt.gate<jumprelu threshold = 0.1, bandwidth = 0.05>, penalty = #molt.penalty<l1 lambda = -0.01, warmup = 0.1>}

// -----

// NaN lambda (hex).
// expected-error @+1 {{penalty lambda must be finite and >= 0, got nan}}
molt.layer @m {d_model = 64, element_type = f32, schedule = #molt.schedule<ranks = [32, 16], counts = [2, 4]>, gate = #molt.gate<jumprelu threshold = 0.1, bandwidth = 0.05>, penalty = #molt.penalty<l1 lambda = 0x7FF8000000000000, warmup = 0.1>}

// -----

// Warmup above 1.
// expected-error @+1 {{penalty warmup must be in [0, 1], got 1.5}}
molt.layer @m {d_model = 64, element_type = f32, schedule = #molt.schedule<ranks = [32, 16], counts = [2, 4]>, gate = #molt.gate<jumprelu threshold = 0.1, bandwidth = 0.05>, penalty = #molt.penalty<l1 lambda = 0.01, warmup = 1.5>}

// -----

// Warmup below 0.
// expected-error @+1 {{penalty warmup must be in [0, 1], got -0.25}}
molt.layer @m {d_model = 64, element_type = f32, schedule = #molt.schedule<ranks = [32, 16], counts = [2, 4]>, gate = #molt.gate<jumprelu threshold = 0.1, bandwidth = 0.05>, penalty = #molt.penalty<l1 lambda = 0.01, warmup = -0.25>}

// -----

// Misspelt field.
// expected-error @+1 {{'molt.layer' op has unknown field 'decoder_bais' (fields: d_model, decoder_bias, element_type, gate, penalty, schedule, sym_name)}}
molt.layer @m {d_model = 64, element_type = f32, schedule = #molt.schedule<ranks = [32, 16], counts = [2, 4]>, gate = #molt.gate<jumprelu threshold = 0.1, bandwidth = 0.05>, penalty = #molt.penalty<tanh c = 4.0, lambda = 0.01, warmup = 0.1>, decoder_bais = false}

// -----

// Missing field.
// expected-error @+1 {{'molt.layer' op requires attribute 'schedule'}}
molt.layer @m {d_model = 64, element_type = f32, gate = #molt.gate<jumprelu threshold = 0.1, bandwidth = 0.05>, penalty = #molt.penalty<tanh c = 4.0, lambda = 0.01, warmup = 0.1>}

// -----

// Wrongly typed field.
// expected-error @+1 {{attribute 'decoder_bias' failed to satisfy constraint: bool attribute}}
molt.layer @m {d_model = 64, element_type = f32, schedule = #molt.schedule<ranks = [32, 16], counts = [2, 4]>, gate = #molt.gate<jumprelu threshold = 0.1, bandwidth = 0.05>, penalty = #molt.penalty<tanh c = 4.0, lambda = 0.01, warmup = 0.1>, decoder_bias = 1}

// -----

// Spec op outside a module.
func.func @f() {
  // expected-error @+1 {{'molt.layer' op expects parent op 'builtin.module'}}
  molt.layer @m {d_model = 64, element_type = f32, schedule = #molt.schedule<ranks = [32, 16], counts = [2, 4]>, gate = #molt.gate<jumprelu threshold = 0.1, bandwidth = 0.05>, penalty = #molt.penalty<tanh c = 4.0, lambda = 0.01, warmup = 0.1>}
  return
}

// -----

// Transcoder features and matched.
molt.layer @m {d_model = 64, element_type = f32, schedule = #molt.schedule<ranks = [32, 16], counts = [2, 4]>, gate = #molt.gate<jumprelu threshold = 0.1, bandwidth = 0.05>, penalty = #molt.penalty<tanh c = 4.0, lambda = 0.01, warmup = 0.1>}
// expected-error @+1 {{'molt.transcoder' op takes either features or matched, not both}}
molt.transcoder @t {d_model = 64, element_type = f32, features = 8, matched = @m, activation = #molt.gate<relu>, penalty = #molt.penalty<l1 lambda = 0.0, warmup = 0.0>}

// -----

// Transcoder without width.
// expected-error @+1 {{'molt.transcoder' op needs features = <count> or matched = @<molt.layer>}}
molt.transcoder @t {d_model = 64, element_type = f32, activation = #molt.gate<relu>, penalty = #molt.penalty<l1 lambda = 0.0, warmup = 0.0>}

// -----

// Transcoder features zero.
// expected-error @+1 {{'molt.transcoder' op features must be positive, got 0}}
molt.transcoder @t {d_model = 64, element_type = f32, features = 0, activation = #molt.gate<relu>, penalty = #molt.penalty<l1 lambda = 0.0, warmup = 0.0>}

// -----

// Topk k above features.
// expected-error @+1 {{'molt.transcoder' op activation topk k = 32 exceeds features = 16}}
molt.transcoder @t {d_model = 64, element_type = f32, features = 16, activation = #molt.gate<topk k = 32>, penalty = #molt.penalty<l1 lambda = 0.0, warmup = 0.0>}

// -----

// Topk k above the matched width.
molt.layer @m {d_model = 64, element_type = f32, schedule = #molt.schedule<ranks = [32, 16], counts = [2, 4]>, gate = #molt.gate<jumprelu threshold = 0.1, bandwidth = 0.05>, penalty = #molt.penalty<tanh c = 4.0, lambda = 0.01, warmup = 0.1>}
// expected-error @+1 {{'molt.transcoder' op activation topk k = 100000 exceeds the matched feature count 130}}
molt.transcoder @t {d_model = 64, element_type = f32, matched = @m, activation = #molt.gate<topk k = 100000>, penalty = #molt.penalty<l1 lambda = 0.0, warmup = 0.0>}

// -----

// Matched to a missing symbol.
// expected-error @+1 {{'molt.transcoder' op matched symbol @nowhere does not exist}}
molt.transcoder @t {d_model = 64, element_type = f32, matched = @nowhere, activation = #molt.gate<relu>, penalty = #molt.penalty<l1 lambda = 0.0, warmup = 0.0>}

// -----

// Matched to a non-layer.
molt.mlp @teacher {d_model = 64, d_hidden = 256, activation = "gelu"}
// expected-error @+1 {{'molt.transcoder' op matched symbol @teacher is a 'molt.mlp', not a molt.layer}}
molt.transcoder @t {d_model = 64, element_type = f32, matched = @teacher, activation = #molt.gate<relu>, penalty = #molt.penalty<l1 lambda = 0.0, warmup = 0.0>}

// -----

// Matched with another d_model.
molt.layer @m {d_model = 64, element_type = f32, schedule = #molt.schedule<ranks = [32, 16], counts = [2, 4]>, gate = #molt.gate<jumprelu threshold = 0.1, bandwidth = 0.05>, penalty = #molt.penalty<tanh c = 4.0, lambda = 0.01, warmup = 0.1>}
// expected-error @+1 {{'molt.transcoder' op d_model = 32 differs from matched layer @m's d_model = 64}}
molt.transcoder @t {d_model = 32, element_type = f32, matched = @m, activation = #molt.gate<relu>, penalty = #molt.penalty<l1 lambda = 0.0, warmup = 0.0>}

// -----

// Matched layer too small.
molt.layer @tiny {d_model = 1000, element_type = f32, schedule = #molt.schedule<ranks = [1], counts = [1]>, gate = #molt.gate<relu>, penalty = #molt.penalty<l1 lambda = 0.0, warmup = 0.0>}
// expected-error @+1 {{'molt.transcoder' op matched layer @tiny has too few parameters for even one feature}}
molt.transcoder @t {d_model = 1000, element_type = f32, matched = @tiny, skip = true, activation = #molt.gate<relu>, penalty = #molt.penalty<l1 lambda = 0.0, warmup = 0.0>}

// -----

// Transcoder parameter overflow.
// expected-error @+1 {{'molt.transcoder' op parameter count overflows int64 (d_model = 4611686018427387904, features = 4)}}
molt.transcoder @t {d_model = 4611686018427387904, element_type = f32, features = 4, activation = #molt.gate<relu>, penalty = #molt.penalty<l1 lambda = 0.0, warmup = 0.0>}

// -----

// Mlp d_hidden.
// expected-error @+1 {{'molt.mlp' op d_hidden must be positive, got 0}}
molt.mlp @teacher {d_model = 64, d_hidden = 0, activation = "gelu"}

// -----

// Mlp d_model.
// expected-error @+1 {{'molt.mlp' op d_model must be positive, got -1}}
molt.mlp @teacher {d_model = -1, d_hidden = 8, activation = "gelu"}

// -----

// Mlp activation.
// expected-error @+1 {{'molt.mlp' op unknown activation 'swish' (expected gelu, gelu_tanh or relu)}}
molt.mlp @teacher {d_model = 64, d_hidden = 256, activation = "swish"}

// -----

// Mlp overflow.
// expected-error @+1 {{'molt.mlp' op parameter count overflows int64 (d_model = 4611686018427387904, d_hidden = 4)}}
molt.mlp @teacher {d_model = 4611686018427387904, d_hidden = 4, activation = "relu"}

// -----

// Duplicate symbols.
// expected-note @+1 {{see existing symbol definition here}}
molt.layer @m {d_model = 64, element_type = f32, schedule = #molt.schedule<ranks = [32, 16], counts = [2, 4]>, gate = #molt.gate<jumprelu threshold = 0.1, bandwidth = 0.05>, penalty = #molt.penalty<tanh c = 4.0, lambda = 0.01, warmup = 0.1>}
// expected-error @+1 {{redefinition of symbol named 'm'}}
molt.layer @m {d_model = 64, element_type = f32, schedule = #molt.schedule<ranks = [32, 16], counts = [2, 4]>, gate = #molt.gate<jumprelu threshold = 0.1, bandwidth = 0.05>, penalty = #molt.penalty<tanh c = 4.0, lambda = 0.01, warmup = 0.1>}

// -----

// A schedule that is not a schedule.
// expected-error @+1 {{attribute 'schedule' failed to satisfy constraint: the rank buckets of a MOLT layer}}
molt.layer @m {d_model = 64, element_type = f32, schedule = 5, gate = #molt.gate<relu>, penalty = #molt.penalty<l1 lambda = 0.0, warmup = 0.0>}

// -----

// A size that is not a 64-bit integer.
// expected-error @+1 {{attribute 'd_hidden' failed to satisfy constraint: 64-bit integer}}
molt.mlp @teacher {d_model = 64, d_hidden = 256 : i32, activation = "gelu"}

// -----

// A float where MLIR needs a '.', and NaN spelt as a word.
// expected-error @+2 {{unexpected decimal integer literal for a floating point value}}
// expected-note @+1 {{add a trailing dot to make the literal a float}}
molt.layer @m {d_model = 64, element_type = f32, schedule = #molt.schedule<reference N = 1>, gate = #molt.gate<relu>, penalty = #molt.penalty<l1 lambda = 1, warmup = 0.0>}

// -----

// expected-error @+1 {{expected floating point literal}}
molt.layer @m {d_model = 64, element_type = f32, schedule = #molt.schedule<reference N = 1>, gate = #molt.gate<relu>, penalty = #molt.penalty<l1 lambda = nan, warmup = 0.0>}

// -----

// An empty symbol name, which only the generic form can spell.
// expected-error @+1 {{'molt.mlp' op needs a non-empty symbol name}}
"molt.mlp"() <{activation = "gelu", d_hidden = 256 : i64, d_model = 64 : i64, sym_name = ""}> : () -> ()
