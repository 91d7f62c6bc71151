//! A network's layer list: its input width, 1 to 4 hidden ReLU layers and its classes.

use core::fmt;

/// Most hidden layers a network has.
pub const MAX_HIDDEN_LAYERS: usize = 4;
/// Most layers (the hidden ones and the softmax head).
pub const MAX_LAYERS: usize = MAX_HIDDEN_LAYERS + 1;
/// Widest hidden layer.
pub const MAX_HIDDEN_WIDTH: usize = 4096;
/// Widest input (a CSV row or an image's pixels).
pub const MAX_INPUTS: usize = 1 << 20;
/// Most classes: labels are bytes.
pub const MAX_CLASSES: usize = 256;

/// Widths of a network's layers: inputs, each hidden layer, classes.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Shape {
    widths: [usize; MAX_LAYERS + 1],
    len: usize,
}

/// Why a layer list was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ShapeError {
    /// Not 1 to [`MAX_HIDDEN_LAYERS`] hidden layers.
    HiddenLayers(usize),
    /// No inputs, or more than [`MAX_INPUTS`].
    Inputs(usize),
    /// A hidden layer of no units or more than [`MAX_HIDDEN_WIDTH`].
    HiddenWidth {
        /// 1-based hidden layer.
        layer: usize,
        /// Its width.
        width: usize,
    },
    /// No classes, or more than [`MAX_CLASSES`].
    Classes(usize),
}

impl fmt::Display for ShapeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            ShapeError::HiddenLayers(n) => write!(
                f,
                "{n} hidden layers: a network has 1 to {MAX_HIDDEN_LAYERS}"
            ),
            ShapeError::Inputs(n) => write!(f, "{n} inputs: 1 to {MAX_INPUTS} are supported"),
            ShapeError::HiddenWidth { layer, width } => write!(
                f,
                "hidden layer {layer} has {width} units: 1 to {MAX_HIDDEN_WIDTH} are supported"
            ),
            ShapeError::Classes(n) => write!(f, "{n} classes: 1 to {MAX_CLASSES} are supported"),
        }
    }
}

impl core::error::Error for ShapeError {}

impl Shape {
    /// `inputs -> hidden[0] -> ... -> classes`.
    pub fn new(inputs: usize, hidden: &[usize], classes: usize) -> Result<Self, ShapeError> {
        if hidden.is_empty() || hidden.len() > MAX_HIDDEN_LAYERS {
            return Err(ShapeError::HiddenLayers(hidden.len()));
        }
        if !(1..=MAX_INPUTS).contains(&inputs) {
            return Err(ShapeError::Inputs(inputs));
        }
        if !(1..=MAX_CLASSES).contains(&classes) {
            return Err(ShapeError::Classes(classes));
        }
        let mut widths = [0; MAX_LAYERS + 1];
        widths[0] = inputs;
        for (layer, &width) in hidden.iter().enumerate() {
            if !(1..=MAX_HIDDEN_WIDTH).contains(&width) {
                return Err(ShapeError::HiddenWidth {
                    layer: layer + 1,
                    width,
                });
            }
            widths[layer + 1] = width;
        }
        widths[hidden.len() + 1] = classes;
        Ok(Self {
            widths,
            len: hidden.len() + 2,
        })
    }

    /// The widths `[inputs, hidden.., classes]` of [`Shape::widths`] back into a shape.
    pub fn from_widths(widths: &[usize]) -> Result<Self, ShapeError> {
        match widths {
            [inputs, hidden @ .., classes] if !hidden.is_empty() => {
                Self::new(*inputs, hidden, *classes)
            }
            _ => Err(ShapeError::HiddenLayers(widths.len().saturating_sub(2))),
        }
    }

    /// Inputs, each hidden layer's units, classes.
    pub fn widths(&self) -> &[usize] {
        &self.widths[..self.len]
    }

    /// Width of an input row.
    pub fn inputs(&self) -> usize {
        self.widths[0]
    }

    /// Units of each hidden layer.
    pub fn hidden(&self) -> &[usize] {
        &self.widths[1..self.len - 1]
    }

    /// Outputs of the head: the number of classes.
    pub fn classes(&self) -> usize {
        self.widths[self.len - 1]
    }

    /// Dense layers, the head included.
    pub fn layers(&self) -> usize {
        self.len - 1
    }

    /// Inputs and outputs of layer `l` (0-based; the head is the last).
    pub fn layer(&self, l: usize) -> (usize, usize) {
        (self.widths[l], self.widths[l + 1])
    }

    /// The widest hidden layer.
    pub fn widest_hidden(&self) -> usize {
        self.hidden().iter().copied().max().unwrap_or(0)
    }

    /// Every hidden unit of every layer, once.
    pub fn hidden_units(&self) -> usize {
        self.hidden().iter().sum()
    }

    /// Parameters of layer `l`: its weights and biases.
    pub fn layer_parameters(&self, l: usize) -> usize {
        let (i, o) = self.layer(l);
        i * o + o
    }

    /// Every parameter of the network.
    pub fn parameters(&self) -> usize {
        (0..self.layers()).map(|l| self.layer_parameters(l)).sum()
    }

    /// Multiply-adds of one row's forward pass.
    pub fn multiply_adds(&self) -> usize {
        (0..self.layers())
            .map(|l| self.layer(l).0 * self.layer(l).1)
            .sum()
    }
}

/// `784-512-10`.
impl fmt::Display for Shape {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, w) in self.widths().iter().enumerate() {
            if i > 0 {
                f.write_str("-")?;
            }
            write!(f, "{w}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for Shape {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Shape({self})")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::string::ToString;

    #[test]
    fn widths_round_trip_and_count_parameters() {
        let s = Shape::new(784, &[256, 128], 10).unwrap();
        assert_eq!(s.to_string(), "784-256-128-10");
        assert_eq!(Shape::from_widths(s.widths()), Ok(s));
        assert_eq!(s.layers(), 3);
        assert_eq!(s.layer(1), (256, 128));
        assert_eq!(
            s.parameters(),
            784 * 256 + 256 + 256 * 128 + 128 + 128 * 10 + 10
        );
        assert_eq!(s.widest_hidden(), 256);
    }

    #[test]
    fn limits_are_enforced() {
        assert_eq!(Shape::new(4, &[], 2), Err(ShapeError::HiddenLayers(0)));
        assert_eq!(Shape::new(4, &[1; 5], 2), Err(ShapeError::HiddenLayers(5)));
        assert_eq!(
            Shape::new(4, &[8, 4097], 2),
            Err(ShapeError::HiddenWidth {
                layer: 2,
                width: 4097
            })
        );
        assert_eq!(Shape::new(0, &[8], 2), Err(ShapeError::Inputs(0)));
        assert_eq!(Shape::new(4, &[8], 257), Err(ShapeError::Classes(257)));
        assert!(Shape::new(4, &[4096; 4], 256).is_ok());
        assert_eq!(
            Shape::from_widths(&[3, 4]),
            Err(ShapeError::HiddenLayers(0))
        );
    }
}
