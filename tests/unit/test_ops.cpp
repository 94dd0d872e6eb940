// The op table (molt/ops.def) is consistent with itself and with the device headers: one
// meaning per argument name across ops, a role and shape rule for every argument, a header in
// kernels/cuda that defines each op's template, and default launches the plan loader accepts.
#include <gtest/gtest.h>

#include <fstream>
#include <map>
#include <set>
#include <sstream>

#include "molt/cuda_wrapper.h"
#include "molt/ops.h"

namespace molt {
namespace {

std::string readFile(const std::string &path) {
  std::ifstream f(path);
  std::stringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

TEST(OpTable, RowsAreIndexedByIdAndNamedOnce) {
  const auto &ops = opSignatures();
  ASSERT_EQ(ops.size(), size_t(OpId::Count));
  std::set<std::string> names;
  for (size_t i = 0; i < ops.size(); ++i) {
    EXPECT_EQ(size_t(ops[i].id), i) << ops[i].op;
    EXPECT_TRUE(names.insert(ops[i].op).second) << ops[i].op << " twice";
    EXPECT_EQ(findOp(ops[i].op), &ops[i]);
    ASSERT_EQ(ops[i].args.size(), ops[i].arguments.size());
    std::set<std::string> args;
    for (size_t a = 0; a < ops[i].args.size(); ++a) {
      EXPECT_STREQ(ops[i].args[a], ops[i].arguments[a].name);
      EXPECT_TRUE(args.insert(ops[i].args[a]).second) << ops[i].op << "." << ops[i].args[a];
    }
  }
  EXPECT_EQ(findOp("no_such_op"), nullptr);
}

// An argument name means one tensor kind everywhere: the executors allocate buffers by name.
TEST(OpTable, AnArgumentNameHasOneDtypeAndShapeRule) {
  std::map<std::string, const OpArg *> first;
  for (const OpSignature &s : opSignatures())
    for (const OpArg &a : s.arguments) {
      auto [it, inserted] = first.emplace(a.name, &a);
      if (inserted)
        continue;
      EXPECT_EQ(int(a.dtype), int(it->second->dtype)) << s.op << "." << a.name;
      EXPECT_EQ(int(a.shape), int(it->second->shape)) << s.op << "." << a.name;
    }
  // A param list is the only argument that is no tensor.
  for (const OpSignature &s : opSignatures())
    for (const OpArg &a : s.arguments)
      EXPECT_EQ(a.dtype == ArgDType::Params, a.shape == ArgShape::ParamList) << s.op;
}

TEST(OpTable, EveryOpHasItsDeviceTemplate) {
  const auto &files = cudaKernelHeaderFiles();
  for (const std::string &f : files)
    EXPECT_FALSE(readFile(std::string(MOLT_SOURCE_DIR) + "/kernels/cuda/" + f).empty()) << f;
  for (const OpSignature &s : opSignatures()) {
    const std::string text = readFile(std::string(MOLT_SOURCE_DIR) + "/kernels/cuda/" + s.header);
    EXPECT_NE(text.find(std::string(" void ") + s.op + "(const Args &a)"), std::string::npos)
        << s.header << " does not define molt::k::" << s.op;
  }
}

TEST(OpTable, DefaultLaunchesAndScratchAreWellFormed) {
  for (const OpSignature &s : opSignatures()) {
    KernelDesc k;
    k.name = k.op = s.op;
    k.entry = std::string("molt_") + s.op;
    for (const std::string &a : s.attrs)
      k.attrs[a] = a == "gate"                    ? AttrValue(std::string("relu"))
                   : a == "kind"                  ? AttrValue(std::string("tanh"))
                   : a == "bandwidth" || a == "c" ? AttrValue(1.0)
                                                  : AttrValue(int64_t(48));
    k.launch = cudaDefaultLaunch(k);
    for (const std::string &g : k.launch.grid)
      EXPECT_FALSE(g.empty()) << s.op;
    EXPECT_GE(cudaWorkWords(k, 64), 0) << s.op;
    EXPECT_GT(opWork(k, 64, 48), 0.0) << s.op;
    auto src = cudaWrapperSource(k);
    ASSERT_TRUE(src.isOk()) << s.op << ": " << src.status().message();
    EXPECT_NE(src->find(std::string("molt::k::") + s.op + "<Cfg>(a);"), std::string::npos);
  }
}

// The kind column, not a name prefix, says whose op it is; spot-check the rows that the old
// "tc_" prefix rule got wrong or right only by luck.
TEST(OpTable, KindColumn) {
  EXPECT_EQ(findOp("tc_encode")->kind, OpKind::Transcoder);
  EXPECT_EQ(findOp("skip_apply")->kind, OpKind::Transcoder);
  EXPECT_EQ(findOp("encode_gate")->kind, OpKind::Molt);
  EXPECT_EQ(findOp("adam")->kind, OpKind::Shared);
  EXPECT_TRUE(findOp("tc_encode")->encodes());
  EXPECT_FALSE(findOp("tc_decode")->encodes());
}

} // namespace
} // namespace molt
