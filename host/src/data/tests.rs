//! The dataset types.

use super::idx::tests::pixels;
use super::*;

#[test]
fn dataset_accessors_and_split() {
    let mut d = Dataset::from_images(IMAGE_PIXELS, pixels(5, 9), vec![3, 1, 4, 1, 5]);
    assert_eq!(d.len(), 5);
    assert!(!d.is_empty());
    assert_eq!(
        d.image(2),
        &pixels(5, 9)[2 * IMAGE_PIXELS..3 * IMAGE_PIXELS]
    );
    assert_eq!(d.label(4), 5);
    assert_eq!(d.class_counts(10)[1], 2);
    let tail = d.split_off_end(2);
    assert_eq!(tail.labels, vec![1, 5]);
    assert_eq!(tail.images, pixels(5, 9)[3 * IMAGE_PIXELS..].to_vec());
    assert_eq!(d.labels, vec![3, 1, 4]);
    assert_eq!(d.images.len(), 3 * IMAGE_PIXELS);
    let all = d.split_off_end(100);
    assert_eq!(all.len(), 3);
    assert!(d.is_empty());
}

#[test]
fn dataset_kind_names() {
    assert_eq!(DatasetKind::Mnist.name(), "mnist");
    assert_eq!(DatasetKind::FashionMnist.to_string(), "fashion-mnist");
    for kind in DatasetKind::ALL {
        assert_eq!(kind.name().parse::<DatasetKind>(), Ok(kind));
    }
    assert_eq!("Fashion_MNIST".parse(), Ok(DatasetKind::FashionMnist));
    let e = "cifar".parse::<DatasetKind>().unwrap_err();
    assert_eq!(
        e.to_string(),
        "unknown dataset 'cifar' (valid: mnist, fashion-mnist)"
    );
    assert_eq!(DatasetKind::Mnist.class_names()[7], "7");
    assert_eq!(DatasetKind::FashionMnist.class_names()[0], "T-shirt/top");
    assert_eq!(DatasetKind::FashionMnist.class_names()[9], "Ankle boot");
}
