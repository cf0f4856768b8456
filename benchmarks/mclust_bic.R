# mclust's mclustBIC over its default grid (14 models x G = 1..9, hc start) on a CSV file, timed.
#   Rscript benchmarks/mclust_bic.R data.csv
# Prints "RESULT {json}" with the seconds of the first and of a second call and the best model.
suppressPackageStartupMessages(library(mclust))
X <- as.matrix(read.csv(commandArgs(trailingOnly = TRUE)[1]))
first <- system.time(bic <- mclustBIC(X))[["elapsed"]]
second <- system.time(bic <- mclustBIC(X))[["elapsed"]]
best <- names(summary(bic))[1]
cat(sprintf('RESULT {"first_s": %.4f, "second_s": %.4f, "best": "%s", "version": "%s"}\n',
            first, second, best, as.character(packageVersion("mclust"))))
