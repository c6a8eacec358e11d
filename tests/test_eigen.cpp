// Eigen interop: maps over strided qlib views and views over Eigen matrices, both orders.
#include "qlib/interop/eigen.hpp"
#include "qlib/quantize.hpp"
#include "test_util.hpp"

using namespace qlib;

TEST_CASE("to_eigen maps strided views without copying", "[eigen]") {
  tensor<float, 2> t({3, 5});
  for (index_t i = 0; i < 3; ++i)
    for (index_t j = 0; j < 5; ++j) t(i, j) = static_cast<float>(10 * i + j);
  auto m = to_eigen(t.view());
  CHECK(m.rows() == 3);
  CHECK(m(2, 4) == 24.0f);
  m(1, 1) = -1.0f;
  CHECK(t(1, 1) == -1.0f);
  const auto tr = to_eigen(t.cview().transpose(0, 1));
  CHECK(tr.rows() == 5);
  CHECK(tr(4, 2) == 24.0f);
  const auto col = to_eigen(t.cview().select(1, 3));
  CHECK(col.size() == 3);
  CHECK(col(2) == 23.0f);
  CHECK(to_eigen(t.cview().slice(1, 1, 4)).sum() == Approx(t(0, 1) + t(0, 2) + t(0, 3) + t(1, 1) + t(1, 2) + t(1, 3) +
                                                            t(2, 1) + t(2, 2) + t(2, 3)));
}

TEST_CASE("as_view reads Eigen matrices in either storage order", "[eigen]") {
  Eigen::MatrixXf cm(4, 6);  // column-major
  cm.setRandom();
  Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor> rm = cm;
  const auto vc = as_view(static_cast<const Eigen::MatrixXf&>(cm));
  const auto vr = as_view(rm);
  for (index_t i = 0; i < 4; ++i)
    for (index_t j = 0; j < 6; ++j) {
      CHECK(vc(i, j) == cm(i, j));
      CHECK(vr(i, j) == cm(i, j));
    }
  CHECK(vr.is_contiguous());
  CHECK_FALSE(vc.is_inner_contiguous());
  // Quantize an Eigen matrix through the view; both orders give the same codes.
  const auto qc = quantize(vc, schemes::s8_symmetric, granularity::per_channel(0));
  const auto qr = quantize(vr, schemes::s8_symmetric, granularity::per_channel(0));
  CHECK(std::equal(qc.values.begin(), qc.values.end(), qr.values.begin()));
  Eigen::Map<Eigen::MatrixXf> mp(cm.data(), 4, 6);
  CHECK(as_view(mp)(3, 5) == cm(3, 5));
}
