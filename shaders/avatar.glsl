#version 330 core
// The avatar head: per-vertex albedo, Lambert + Blinn-Phong + rim light, smooth normals. The eyeballs use
// the same program with u_eye set: their colour (sclera, iris, pupil) comes from the direction of the
// point on the unit sphere, so the iris is a crisp disc at any resolution and turns with the eyeball.
// Positions are in the head frame (x = the subject's left, y down, +z into the head); the matrices do the rest.

#if defined VERTEX_SHADER

in vec3 in_position;
in vec3 in_normal;
in vec3 in_color;

uniform mat4 u_mvp;            // head frame -> clip
uniform mat4 u_modelview;      // head frame -> view space (y up, +z towards the viewer)
uniform mat3 u_normal_matrix;  // head-frame normals -> view space

out vec3 v_pos;
out vec3 v_normal;
out vec3 v_color;
out vec3 v_local;

void main() {
    v_pos = (u_modelview * vec4(in_position, 1.0)).xyz;
    v_normal = u_normal_matrix * in_normal;
    v_color = in_color;
    v_local = in_position;
    gl_Position = u_mvp * vec4(in_position, 1.0);
}

#elif defined FRAGMENT_SHADER

uniform bool u_eye;          // an eyeball: colour from the direction on the unit sphere (forward = -z)
uniform float u_iris_cos;    // cos of the iris's angular radius
uniform float u_pupil_cos;   // cos of the pupil's angular radius
uniform vec3 u_sclera;
uniform vec3 u_iris;
uniform vec3 u_pupil;
uniform vec3 u_light_dir;    // view space, towards the light
uniform float u_ambient;
uniform float u_diffuse;
uniform float u_specular;
uniform float u_shininess;
uniform float u_rim;         // rim light strength (silhouette edges light up: reads as a head, not a cut-out)
uniform vec3 u_rim_color;

in vec3 v_pos;
in vec3 v_normal;
in vec3 v_color;
in vec3 v_local;

out vec4 f_color;

vec3 eye_albedo() {
    float c = dot(normalize(v_local), vec3(0.0, 0.0, -1.0));
    float aa = fwidth(c) + 1e-4;
    // t: 0 at the iris centre, 1 at its rim; the outer quarter darkens into a limbal ring
    float t = clamp((1.0 - c) / max(1.0 - u_iris_cos, 1e-4), 0.0, 1.0);
    vec3 iris = mix(u_iris, u_iris * 0.35, smoothstep(0.7, 1.0, t));
    vec3 col = mix(u_sclera, iris, smoothstep(u_iris_cos - aa, u_iris_cos + aa, c));
    return mix(col, u_pupil, smoothstep(u_pupil_cos - aa, u_pupil_cos + aa, c));
}

void main() {
    vec3 albedo = u_eye ? eye_albedo() : v_color;
    vec3 n = normalize(v_normal);
    if (!gl_FrontFacing) n = -n;
    vec3 v = normalize(-v_pos);
    vec3 l = normalize(u_light_dir);
    float lambert = max(dot(n, l), 0.0);
    vec3 h = normalize(l + v);
    float spec = lambert > 0.0 ? pow(max(dot(n, h), 0.0), u_shininess) : 0.0;
    float rim = pow(1.0 - max(dot(n, v), 0.0), 3.0) * u_rim;
    // rim light scaled by the albedo's brightness: dark surfaces (the mouth's inside) stay dark
    float bright = max(max(albedo.r, albedo.g), albedo.b);
    vec3 c = albedo * (u_ambient + u_diffuse * lambert) + u_rim_color * rim * bright + vec3(u_specular * spec);
    f_color = vec4(c, 1.0);
}

#endif
