#!/bin/sh
# Writes images.h for the C example: the first N images and labels of an IDX pair (gzip),
# e.g. the Fashion-MNIST test set:
#
#   tools/images-h.sh /usr/share/datasets/fashion-mnist/t10k-images-idx3-ubyte.gz \
#       /usr/share/datasets/fashion-mnist/t10k-labels-idx1-ubyte.gz 100 > data/images.h
set -eu
images=$1
labels=$2
n=${3:-100}
pixels=784
# FILE SKIP COUNT [GROUP]: COUNT bytes after SKIP as C initialisers, 16 to a line, each GROUP
# of them in braces.
bytes() {
    gzip -dc "$1" | tail -c +$(($2 + 1)) | head -c "$3" | od -An -v -tu1 |
        awk -v group="${4:-0}" '
            function flush() { if (s != "") print "   " s; s = ""; c = 0 }
            { for (i = 1; i <= NF; i++) {
                if (group && k % group == 0) print "    {"
                s = s " " $i ","; c++; k++
                if (c == 16) flush()
                if (group && k % group == 0) { flush(); print "    }," }
            } }
            END { flush() }'
}
cat <<HEADER
/* $n images of $pixels pixels and their labels, from $(basename "$images"). */
#ifndef PICODENSE_IMAGES_H
#define PICODENSE_IMAGES_H

#define PICODENSE_IMAGES_COUNT $n

static const unsigned char picodense_images[$n][$pixels] = {
HEADER
bytes "$images" 16 $((n * pixels)) $pixels
echo "};"
echo
echo "static const unsigned char picodense_labels[$n] = {"
bytes "$labels" 8 "$n"
printf '};\n\n#endif /* PICODENSE_IMAGES_H */\n'
