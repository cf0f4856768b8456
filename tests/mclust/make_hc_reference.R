#!/usr/bin/env Rscript
# Reference trees from R's mclust for jaxgmm.hc (model-based agglomerative
# hierarchical clustering, mclust's default EM initialisation).
#
# Usage (from the repository root):
#     Rscript tests/mclust/make_hc_reference.R OUT.json
#
# Writes one JSON object (read by tests/test_hc.py):
#   mclust_version, R_version, G (the cuts written: 1..9),
#   datasets -> name -> {
#     X      (N, D) the data,
#     Z_SVD  (N, D') attr(hc(X, use = "SVD"), "data"): the transformed data,
#     hc -> model ("VVV", "EII") -> use ("SVD", "VARS") -> {
#       merges     (N - 1, 2) t(hc(X, modelName = model, use = use)), 1-based
#                  as mclust gives it: row t = the two groups merged at step t,
#                  each named by its smallest row index;
#       partitions (N, 9) hclass(tree, 1:9): column G is the G-group cut,
#                  labels 1..G in order of first row.
#     }
#   }
# Data sets: Old Faithful (jaxgmm/data/faithful.csv, 272 x 2, with 16
# duplicated rows, so exact ties), three_d (300 x 3) and five_d (500 x 5),
# synthetic mixtures drawn after set.seed() and rounded to 6 decimals.
# Deterministic: nothing depends on the time. Numbers are written with the
# shortest of %.15g / %.16g / %.17g that reads back to the identical double
# (as tests/mclust/make_reference.R does).

suppressPackageStartupMessages(library(mclust))

args <- commandArgs(trailingOnly = TRUE)
if (length(args) < 1) stop("usage: Rscript make_hc_reference.R OUT.json")
out_path <- args[[1]]

# The repository root, the JSON writer and the drawing helpers (shared with make_reference.R).
source(file.path(dirname(normalizePath(sub("^--file=", "", grep("^--file=", commandArgs(FALSE), value = TRUE)[1]))),
                 "common.R"))

draw_shuffled <- function(counts, means, sigmas) {  # common.R's draw(), rows in random order
  X <- draw(counts, means, sigmas)$X
  X[sample.int(nrow(X)), , drop = FALSE]
}
random_sigma <- function(d, shape, vol) {
  O <- random_rotation(d)
  s <- vol * O %*% diag(shape / prod(shape)^(1 / d)) %*% t(O)
  (s + t(s)) / 2
}

datasets <- list()
local({
  f <- read.csv(file.path(root, "jaxgmm", "data", "faithful.csv"))
  X <- as.matrix(f[, c("eruptions", "waiting")])
  dimnames(X) <- NULL
  datasets$faithful <<- X
})
local({
  set.seed(20240611)
  sig <- list(random_sigma(3, c(4, 1, 0.25), 0.6), random_sigma(3, c(2.5, 1, 0.4), 1.5),
              random_sigma(3, c(1.5, 1.2, 1 / 1.8), 3.0))
  datasets$three_d <<- draw_shuffled(c(90L, 135L, 75L), list(c(0, 0, 0), c(5, 1, -1), c(1, 6, 2)), sig)
})
local({
  set.seed(20240612)
  sig <- list(random_sigma(5, c(5, 2, 1, 0.5, 0.1), 0.8), random_sigma(5, c(1, 3, 0.5, 2, 1), 2.0),
              random_sigma(5, c(2, 2, 1, 1, 0.3), 1.2), random_sigma(5, c(6, 1, 1, 1, 1), 1.0))
  means <- list(c(0, 0, 0, 0, 0), c(4, 4, -1, 1, 0), c(-3, 3, 2, 0, 2), c(1, -4, 0, 3, -2))
  datasets$five_d <<- draw_shuffled(c(150L, 120L, 130L, 100L), means, sig)
})

# ---------------------------------------------------------------------- trees
GS <- 1:9
out_sets <- list()
for (name in names(datasets)) {
  X <- datasets[[name]]
  hcs <- list()
  for (model in c("VVV", "EII")) {
    per_use <- list()
    for (use in c("SVD", "VARS")) {
      tree <- hc(X, modelName = model, use = use)
      per_use[[use]] <- list(merges = rows(t(unclass(tree)[, , drop = FALSE]), int = TRUE),
                             partitions = rows(hclass(tree, GS), int = TRUE))
      if (model == "VVV" && use == "SVD") Z <- attr(tree, "data")
    }
    hcs[[model]] <- per_use
  }
  out_sets[[name]] <- list(X = rows(X), Z_SVD = rows(Z), hc = hcs)
}

out <- list(
  mclust_version = as.character(packageVersion("mclust")),
  R_version = paste(R.version$major, R.version$minor, sep = "."),
  G = I(GS),
  datasets = out_sets
)
writeLines(to_json(out), out_path)
