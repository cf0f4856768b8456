# mclust's me() on the benchmark's data and start, timed per EM iteration.
#   Rscript benchmarks/mclust_me.R X.bin z.bin N D G MODEL ITERS
# X.bin and z.bin hold float64 values, row-major (N × D and N × G). Prints one line
# "RESULT {json}" with ms per iteration and the final log-likelihood. The time per
# iteration is the difference of runs with ITERS and 1 iterations (each run pays the
# first M-step and the set-up once), as for scikit-learn in run.py.
suppressPackageStartupMessages(library(mclust))
args <- commandArgs(trailingOnly = TRUE)
n <- as.integer(args[3]); d <- as.integer(args[4]); G <- as.integer(args[5])
model <- args[6]; iters <- as.integer(args[7])
read_matrix <- function(path, rows, cols) {
  con <- file(path, "rb"); on.exit(close(con))
  matrix(readBin(con, "double", n = rows * cols, size = 8), rows, cols, byrow = TRUE)
}
X <- read_matrix(args[1], n, d)
z <- read_matrix(args[2], n, G)
# tol = 0 is refused by emControl; a tolerance no change reaches runs exactly itmax iterations.
run <- function(itmax) {
  control <- emControl(itmax = c(itmax, 100), tol = c(1e-300, sqrt(.Machine$double.eps)))
  elapsed <- system.time(fit <- me(modelName = model, data = X, z = z, control = control))[["elapsed"]]
  list(elapsed = elapsed, fit = fit)
}
one <- min(sapply(1:2, function(i) run(1)$elapsed))
all <- run(iters)
# me() can stop before itmax (an inner M-step that fails to converge ends the run): divide by the
# iterations it ran, read by position since the attribute's names differ between models.
ran <- abs(as.integer(attr(all$fit, "info")[1]))  # negative where itmax was reached
ms <- if (is.na(ran) || ran < 2) NA else 1000 * (all$elapsed - one) / (ran - 1)
loglik <- if (is.null(all$fit$loglik) || is.na(all$fit$loglik)) "null" else sprintf("%.17g", all$fit$loglik / n)
ms_json <- if (is.na(ms)) "null" else sprintf("%.6f", ms)
cat(sprintf('RESULT {"ms_per_iter": %s, "n_iter": %d, "log_likelihood": %s, "first_s": %.6g, "version": "%s"}\n',
            ms_json, ran, loglik, all$elapsed, as.character(packageVersion("mclust"))))
